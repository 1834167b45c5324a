"""ASGI middleware of the server: a request body limit and the response headers every answer carries.

* Bodies larger than the limit are refused with HTTP 413 before the application sees them: a declared
  ``Content-Length`` is checked first; a body without one is read (at most the limit) before the application
  is called, so no route ever holds more than the limit per request.
* Every response gets ``X-Content-Type-Options: nosniff``; with cross-origin isolation on (the default), also
  ``Cross-Origin-Opener-Policy: same-origin``, ``Cross-Origin-Embedder-Policy: require-corp`` and
  ``Cross-Origin-Resource-Policy: same-origin``: they let the page's onnxruntime-web use threads
  (``SharedArrayBuffer``).
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ISOLATION_HEADERS = [
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-embedder-policy", b"require-corp"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


def error_body(status: int, code: str, message: str) -> bytes:
    """The JSON of an error answer (the same shape as the application's errors)."""
    return json.dumps({"error": {"status": status, "code": code, "message": message, "details": None}}).encode()


class LimitsAndHeaders:
    """Wraps an ASGI app: refuses request bodies over ``max_body`` bytes and adds security headers."""

    def __init__(self, app: Any, max_body: int, isolation: bool = True) -> None:
        self.app = app
        self.max_body = int(max_body)
        self.headers = [(b"x-content-type-options", b"nosniff")] + (ISOLATION_HEADERS if isolation else [])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = list(message.get("headers", [])) + self.headers
            await send(message)

        headers = dict(scope.get("headers", []))
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await self._refuse(send_with_headers, 400, "bad_request", "Content-Length is not a number")
                return
            if declared > self.max_body:
                await self._refuse_large(send_with_headers)
                return
        elif scope.get("method") in ("POST", "PUT", "PATCH"):
            # no declared length (chunked): read the body here, at most the limit, then replay it
            chunks, total = [], 0
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                chunk = message.get("body", b"")
                total += len(chunk)
                if total > self.max_body:
                    await self._refuse_large(send_with_headers)
                    return
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    async def _refuse_large(self, send: Send) -> None:
        await self._refuse(send, 413, "request_too_large",
                           f"the request body is larger than this server accepts ({self.max_body} bytes)")

    @staticmethod
    async def _refuse(send: Send, status: int, code: str, message: str) -> None:
        body = error_body(status, code, message)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


__all__ = ["LimitsAndHeaders", "error_body"]
