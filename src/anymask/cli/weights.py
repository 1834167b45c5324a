"""``anymask weights list | fetch | path``: the checkpoint catalogue and cache."""

from __future__ import annotations

import argparse


def add_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register the command and its actions."""
    weights = commands.add_parser("weights", parents=[common], help="list, fetch and locate model checkpoints",
                                  description="Checkpoints are verified by sha256 and cached in $ANYMASK_HOME "
                                  "(default ~/.cache/anymask); $ANYMASK_WEIGHTS_DIR is searched first.")
    wcmd = weights.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    wcmd.add_parser("list", help="the catalogue: name, file, size, licence, whether cached")
    fetch = wcmd.add_parser("fetch", parents=[common], help="obtain, verify and cache a checkpoint")
    fetch.add_argument("name", help="catalogue name (see 'anymask weights list')")
    fetch.add_argument("--force", action="store_true", help="download again even if cached")
    path = wcmd.add_parser("path", help="print the local path of a verified checkpoint (no download)")
    path.add_argument("name", help="catalogue name")



def run(args: argparse.Namespace) -> int:
    from .. import weights

    if args.weights_command == "list":
        print(weights.format_table(weights.list_entries()))
    elif args.weights_command == "fetch":
        print(weights.fetch(args.name, force=args.force, progress=not args.quiet))
    else:
        print(weights.resolve(args.name, download=False, progress=False))
    return 0
