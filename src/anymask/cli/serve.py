"""``anymask serve``: the HTTP API and the click-to-segment page (see ``docs/web.md``)."""

from __future__ import annotations

import argparse
import ipaddress
import logging

from .common import add_model_arguments, load_model_from_args

logger = logging.getLogger("anymask")


def add_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register the command and its options."""
    p = commands.add_parser(
        "serve",
        parents=[common],
        help="serve the HTTP API and the click-to-segment web page",
        description="Start a web server: open http://HOST:PORT/ for the page (drop an image, click to segment; "
        "the decoder runs in the browser), or use the HTTP API (OpenAPI schema at /docs). Images are encoded "
        "once on upload and their embeddings kept in a memory cache of bounded size. Listens on 127.0.0.1 only "
        "unless --host says otherwise.",
    )
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes the server "
                   "to the network, which has no authentication)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    add_model_arguments(p, backend=True)
    p.add_argument("--max-upload-mb", type=float, default=32, metavar="MB",
                   help="largest request body (an image upload) in MiB; larger ones get HTTP 413 (default 32)")
    p.add_argument("--max-pixels", type=int, default=40_000_000, metavar="N",
                   help="largest image in pixels, checked before decoding (decompression bombs); default 40000000")
    p.add_argument("--cache-mb", type=float, default=512, metavar="MB",
                   help="memory for cached image embeddings (about 4 MiB + the file per image); the least "
                   "recently used are dropped (default 512)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow a page from ORIGIN (e.g. http://localhost:3000) to call the API; repeat for "
                   "several; default none (CORS off)")
    p.add_argument("--no-isolation", action="store_true",
                   help="do not send the cross-origin isolation headers (COOP/COEP); the page's browser decoder "
                   "then runs on one thread")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                   help="the web server's log level (default info)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..errors import ModelError
    from ..server import create_app

    for name in ("max_upload_mb", "cache_mb"):
        if getattr(args, name) <= 0:
            raise ModelError(f"--{name.replace('_', '-')} must be positive")
    if args.max_pixels <= 0 or not 0 < args.port < 65536:
        raise ModelError("--max-pixels must be positive and --port in 1..65535")
    if not _is_loopback(args.host):
        logger.warning("listening on %s: anyone who can reach this address can use the server (no authentication)",
                       args.host)
    model = load_model_from_args(args, progress=not args.quiet)
    app = create_app(model, backend=args.backend, max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels,
                     cache_mb=args.cache_mb, cors_origins=args.cors_origin,
                     cross_origin_isolation=not args.no_isolation)
    app.state.engine.decoder_graph()  # export the browser's decoder graph now, not on the first page load
    print(f"anymask: serving {model.spec.name} on http://{args.host}:{args.port}/ (API docs: /docs)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
