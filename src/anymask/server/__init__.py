"""The HTTP API and the web page (``anymask serve``): :func:`create_app` builds the FastAPI application.

Runs on fastapi, uvicorn and python-multipart (dependencies of anymask).
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
