"""``cinepregen export``: a board from a .blend to editorial and pipeline files (``backend.exports``)."""

from __future__ import annotations

import sys
from pathlib import Path


def _run(args) -> int:
    from backend.commands.render_passes import addon_registered, is_blend_file
    from backend.exports.board import export_board, parse_formats
    from backend.exports.storyboard_pdf import PAGE_FORMATS

    blend = Path(args.blend)
    try:
        formats = parse_formats(args.formats)
        if args.page not in PAGE_FORMATS:
            raise ValueError(f"--page {args.page}: choose {' or '.join(PAGE_FORMATS)}")
        if not blend.is_file():
            raise ValueError(f"{blend} does not exist")
        if not is_blend_file(blend):
            raise ValueError(f"{blend} is not a .blend file (open it in Blender and save it as .blend)")
        with addon_registered():
            import bpy

            bpy.ops.wm.open_mainfile(filepath=str(blend.resolve()))
            scene = bpy.data.scenes.get(args.scene) if args.scene else bpy.context.scene
            if scene is None:
                raise ValueError(f"no scene named {args.scene!r} in {blend.name} "
                                 f"(scenes: {', '.join(s.name for s in bpy.data.scenes)})")
            written = export_board(scene, Path(args.out), formats, title=args.title, page_format=args.page,
                                   progress=lambda fraction, stage: print(f"{fraction:4.0%} {stage}", flush=True))
    except (ValueError, RuntimeError, OSError) as error:
        print(f"cinepregen export: {error}", file=sys.stderr)
        return 1
    for name, files in written.items():
        print(f"{name}: {', '.join(files)}")
    return 0


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "export", help="write a board's timeline, EDL, cameras, storyboard PDF and shot list",
        description="Read the CinePreGen storyboard of a .blend and write, in board order: an OpenTimelineIO "
                    "timeline (.otio), a CMX 3600 EDL, one FBX camera per shot, a USD stage of every shot's camera, "
                    "a storyboard PDF and a shot list CSV.")
    parser.add_argument("blend", help="the .blend with the storyboard")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--formats", default="all",
                        help="comma-separated: otio,edl,fbx,usd,pdf,csv (default: all)")
    parser.add_argument("--scene", help="the scene with the storyboard (default: the file's active scene)")
    parser.add_argument("--title", help="the board's title in the files (default: the scene's name)")
    parser.add_argument("--page", default="A4", help="storyboard page size: A4 or Letter (default: A4)")
    parser.set_defaults(func=_run)
