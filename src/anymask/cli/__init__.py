"""The ``anymask`` command.

    anymask segment IMAGE --point X,Y[,LABEL] ... --box X0,Y0,X1,Y1 ... [-o DIR]
    anymask everything IMAGE_OR_DIR -o OUT [--format coco|png|both]
    anymask batch embed|everything|boxes INPUT -o OUT [--engine local|ray] [--workers N]
    anymask video VIDEO --frame N --box X0,Y0,X1,Y1 --object ID ... [-o DIR]
    anymask weights list | fetch NAME | path NAME
    anymask serve [--host 127.0.0.1] [--port 8000] [--model NAME]
    anymask export MODEL -o DIR [--quantize int8] [--opset N]
    anymask models

Every error anymask raises on purpose is printed on one line (``anymask: error: ...``) and ends the
command with a non-zero exit code; argument errors exit with 2, as argparse does.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from types import ModuleType
from typing import Sequence

from .. import __version__
from ..errors import AnymaskError

logger = logging.getLogger("anymask")

# One module per command in this package, each with ``add_parser(commands, common)`` and ``run(args) -> int``.
# Listed in the order ``--help`` shows them. Command modules import heavy libraries (torch) inside ``run``.
COMMANDS = ("segment", "everything", "batch", "video", "serve", "export", "weights", "models")


def _command_module(name: str) -> ModuleType:
    return importlib.import_module(f".{name}", __name__)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anymask",
        description="Promptable image segmentation with the Segment Anything family (SAM, MobileSAM, LiteMedSAM).",
    )
    parser.add_argument("--version", action="version", version=f"anymask {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors; no progress bars")
    # the same options after the command name (`anymask segment ... -v`)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="more log output (-vv for debug)")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="only errors; no progress bars")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        _command_module(name).add_parser(commands, common)
    return parser


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def one_line(message: str) -> str:
    """A multi-line error message (e.g. a list of sources tried) folded into one line."""
    lines = [" ".join(line.split()) for line in message.splitlines() if line.strip()]
    folded = lines[0] if lines else ""
    for line in lines[1:]:
        folded += (" " if folded.endswith(":") else "; ") + line.lstrip("-* ")
    return folded


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``anymask`` command; returns the exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose, args.quiet)
    try:
        return _command_module(args.command).run(args)
    except AnymaskError as exc:
        print(f"anymask: error: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("anymask: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
