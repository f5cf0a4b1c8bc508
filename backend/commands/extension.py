"""``cinepregen extension build``: the installable Blender extension zip."""

from pathlib import Path


def _build(args):
    from backend.blender.extension import build_extension

    print(f"built {build_extension(Path(args.out))}")
    return 0


def add_parser(subparsers):
    parser = subparsers.add_parser("extension", help="Blender extension packaging")
    sub = parser.add_subparsers(dest="extension_command", required=True)
    build = sub.add_parser("build", help="build dist/cinepregen-<version>.zip with Blender's packer")
    build.add_argument("--out", default="dist", help="output folder (default: dist)")
    build.set_defaults(func=_build)
