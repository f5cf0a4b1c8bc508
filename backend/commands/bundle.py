"""``cinepregen bundle``: check a shot bundle before it goes to the backend."""

from pathlib import Path


def _validate(args) -> int:
    from cinepregen_addon.core.shot_bundle import bundle_summary, read_bundle, validate_bundle

    path = Path(args.path)
    if not path.exists():
        print(f"{path}: no such file or folder")
        return 2
    problems = validate_bundle(path)
    for problem in problems:
        print(problem)
    if problems:
        return 1
    summary = bundle_summary(read_bundle(path))
    print("ok")
    print(f"shot {summary['name']!r}: {summary['frames']} frames at {summary['resolution'][0]}x"
          f"{summary['resolution'][1]}, objects: {', '.join(summary['objects']) or 'none'}")
    return 0


def add_parser(subparsers):
    parser = subparsers.add_parser("bundle", help="inspect shot bundles")
    actions = parser.add_subparsers(dest="bundle_command", metavar="ACTION", required=True)
    validate = actions.add_parser("validate", help="print every problem of a shot bundle, or 'ok' "
                                  "(exit 0 ok, 1 invalid, 2 missing path)")
    validate.add_argument("path", help="shot bundle folder or zip")
    validate.set_defaults(func=_validate)
