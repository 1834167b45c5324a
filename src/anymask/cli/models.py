"""``anymask models``: the models anymask can build."""

from __future__ import annotations

import argparse


def add_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register the command."""
    commands.add_parser("models", parents=[common], help="list the models anymask can build")


def run(args: argparse.Namespace) -> int:
    from ..models import get_model_spec, list_models

    for name in list_models():
        spec = get_model_spec(name)
        aliases = f" (aliases: {', '.join(spec.aliases)})" if spec.aliases else ""
        print(f"{name:<12} {spec.image_size:>5} px  weights={spec.weights:<12} {spec.description}{aliases}")
    return 0
