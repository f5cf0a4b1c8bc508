"""``cinepregen demo``: the end-to-end main job (``backend.demo``)."""

from pathlib import Path


def _run(args):
    from backend.demo import run_demo

    return run_demo(Path(args.out), frames_per_shot=args.frames, weights=args.weights)


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "demo", help="build a 3-shot board in Blender and generate every shot",
        description="The end-to-end job: build a set and a three-shot storyboard in Blender, render each shot's "
                    "guidance passes, generate the clips on a local backend and write the board, the clips, an "
                    "animatic, a storyboard sheet and a report to --out.")
    parser.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    parser.add_argument("--frames", type=int, default=16, help="frames per shot (default: 16)")
    parser.add_argument("--weights", help="model folder (default: the shipped previs-tiny)")
    parser.set_defaults(func=_run)
