"""``cinepregen render-passes``: render shot bundles from a saved .blend without the UI."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from pathlib import Path


def _frame_range(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(-?\d+):(-?\d+)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"must look like START:END, got {text!r}")
    return int(match[1]), int(match[2])


def _resolution(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"must look like WIDTHxHEIGHT, got {text!r}")
    return int(match[1]), int(match[2])


BLEND_MAGICS = (b"BLENDER", b"\x1f\x8b", b"\x28\xb5\x2f\xfd")  # plain, gzip- and zstd-compressed .blend files


def is_blend_file(path: Path) -> bool:
    with Path(path).open("rb") as f:
        head = f.read(7)
    return any(head.startswith(magic) for magic in BLEND_MAGICS)


def _run(args) -> int:
    try:
        with addon_registered():
            return _render(args)
    except (ValueError, FileExistsError, OSError) as e:
        print(f"error: {str(e).replace('pass overwrite=True', 'add --overwrite')}", file=sys.stderr)
        return 1


@contextlib.contextmanager
def addon_registered():
    """The add-on registered for the command, and unregistered after it if it was registered here: Blender 4.5
    does not exit while an add-on registered by a script still is (its timers and handlers stay)."""
    import bpy

    import cinepregen_addon

    registered_here = not hasattr(bpy.types.Scene, "cinepregen")
    if registered_here:
        cinepregen_addon.register()
    try:
        yield
    finally:
        if registered_here and hasattr(bpy.types.Scene, "cinepregen"):
            cinepregen_addon.unregister()


@contextlib.contextmanager
def blender_output_to(log: Path):
    """Blender's renderer prints a line per frame ("Fra:", "Saved:") on the process's stdout, from C: send file
    descriptor 1 to ``log`` meanwhile, so the progress bar (on stderr) stays readable."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(log, "ab") as target:
        os.dup2(target.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def _render(args) -> int:
    import bpy
    from tqdm import tqdm

    from cinepregen_addon import object_ids, render_passes
    from cinepregen_addon.core.names import shot_folder_name

    blend = Path(args.blend)
    if not blend.is_file():
        raise ValueError(f"{blend} does not exist")
    if not is_blend_file(blend):
        raise ValueError(f"{blend} is not a .blend file (open it in Blender and save it as .blend)")
    if args.frames and not args.camera:
        raise ValueError("--frames goes with --camera; storyboard shots carry their own frame range")
    bpy.ops.wm.open_mainfile(filepath=str(blend.resolve()))
    scene = bpy.data.scenes[args.scene] if args.scene else bpy.context.scene
    board: list[str] = []
    if args.camera:
        start, end = args.frames or (scene.frame_start, scene.frame_end)
        specs = [render_passes.ShotRenderSpec(
            name=args.name or args.camera, camera_name=args.camera, frame_start=start, frame_end=end,
            prompt=args.prompt, seed=args.seed, resolution=args.resolution or render_passes.DEFAULT_RESOLUTION,
            include_clay=bool(args.clay),
            fps=scene.render.fps / scene.render.fps_base,
        )]
    else:
        specs = render_passes.storyboard_shot_specs(scene, resolution=args.resolution, include_clay=args.clay)
        board = [spec.name for spec in specs]  # folder names are the board's, whichever shots are rendered
        if args.shot:
            known = {s.name for s in specs}
            missing = [n for n in args.shot if n not in known]
            if missing:
                raise ValueError(f"no shot named {', '.join(missing)} (shots: {', '.join(sorted(known))})")
            specs = [s for s in specs if s.name in args.shot]
        if not specs:
            raise ValueError("the storyboard has no shots")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    new_ids = object_ids.objects_without_ids(scene)
    total = sum(s.frame_end - s.frame_start + 1 for s in specs)
    with tqdm(total=total, unit="frame", desc="render-passes") as bar, blender_output_to(out / "blender.log"):
        for spec in specs:
            frames = spec.frame_end - spec.frame_start + 1
            start = bar.n

            def progress(fraction, stage, start=start, frames=frames, name=spec.name):
                bar.set_postfix_str(f"{name}: {stage}")
                bar.update(start + round(fraction * frames) - bar.n)

            folder = out / shot_folder_name(spec.name, board)
            path = render_passes.render_shot_bundle(scene, spec, folder, progress, overwrite=args.overwrite)
            bar.write(f"{spec.name}: {path}")
    if new_ids:  # IDs must stay the same from render to render: they are kept in the .blend
        bpy.ops.wm.save_mainfile()
        print(f"gave {len(new_ids)} object(s) stable IDs and saved them in {blend}: {', '.join(new_ids[:8])}"
              f"{' ...' if len(new_ids) > 8 else ''}")
    return 0


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "render-passes", help="render guidance passes of storyboard shots into shot bundles",
        description="Render shot bundles (depth, normals, object IDs, motion vectors, cameras) from a .blend. "
                    "Shots come from the CinePreGen storyboard (--shot/--all), or from a camera and a frame range "
                    "for a plain .blend (--camera, --frames).",
    )
    parser.add_argument("blend", help="the .blend file")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--shot", action="append", help="storyboard shot to render (repeatable)")
    which.add_argument("--all", action="store_true", help="render every shot of the storyboard")
    which.add_argument("--camera", help="camera object to render from (a plain .blend, no storyboard)")
    parser.add_argument("--frames", type=_frame_range,
                        help="START:END with --camera (default: the scene's frame range); a range that starts "
                             "before 0 is given as --frames=-20:-1")
    parser.add_argument("--name", help="shot name with --camera (default: the camera's name)")
    parser.add_argument("--prompt", default="", help="prompt stored in the bundle with --camera")
    parser.add_argument("--seed", type=int, default=0, help="seed stored in the bundle with --camera")
    parser.add_argument("--scene", help="scene name (default: the file's active scene)")
    parser.add_argument("--resolution", type=_resolution, default=None,
                        help="WIDTHxHEIGHT (default: the storyboard's pass resolution; 128x72 with --camera)")
    parser.add_argument("--clay", action=argparse.BooleanOptionalAction, default=None,
                        help="render the clay pass (the scene's own light on grey surfaces, read by models with "
                             "shading inputs); default: the storyboard's setting, off with --camera")
    parser.add_argument("--overwrite", action="store_true", help="replace existing bundles in --out")
    parser.add_argument("--out", required=True, help="output folder; one bundle folder per shot")
    parser.set_defaults(func=_run)
