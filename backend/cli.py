"""The ``cinepregen`` command line: the backbone of every user-facing job.

Each subcommand lives in its own module under ``backend/commands/`` and exposes ``add_parser(subparsers)``;
modules are discovered here, so adding a command never touches this file. Command modules import their heavy
dependencies (bpy, torch) inside the handler, so ``cinepregen --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from backend import __version__, commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cinepregen",
        description="Camera-controllable video previsualization for Blender.",
    )
    parser.add_argument("--version", action="version", version=f"cinepregen {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{info.name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
