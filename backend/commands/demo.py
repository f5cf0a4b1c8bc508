"""``cinepregen demo``: the end-to-end main job."""

from pathlib import Path


def _run(args):
    from backend.demo import run_demo

    return run_demo(Path(args.out))


def add_parser(subparsers):
    parser = subparsers.add_parser("demo", help="run the end-to-end demo and write its outputs")
    parser.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    parser.set_defaults(func=_run)
