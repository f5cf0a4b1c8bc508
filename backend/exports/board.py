"""A board out of a .blend, into every export format: what ``cinepregen export`` and the add-on's Export run.

The board is read once into :class:`ShotRecord` s (``board_records``); each format is then one writer. Key frames for
the storyboard come from the shot's generated clip (first, middle and last frame), or from its shot bundle's passes
(the clay pass, else normals), or, for a shot with neither yet, from a Workbench render of its camera.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from backend.exports.shot_list import ShotRecord, frame_rate, write_shot_list_csv
from backend.previews import spread_frames
from cinepregen_addon.core.names import safe_name

FORMATS = ("otio", "edl", "fbx", "usd", "pdf", "csv")
KEY_FRAME_WIDTH = 480
KEY_FRAMES = 3  # per shot: first, middle and last
ProgressFn = Callable[[float, str], None]


def parse_formats(text: str) -> list[str]:
    """"otio,edl" -> ["otio", "edl"]; "all" or "" -> every format. Unknown names are an error naming them."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()] if text and text != "all" else list(FORMATS)
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise ValueError(f"unknown export format {', '.join(unknown)}: choose from {', '.join(FORMATS)}")
    return list(dict.fromkeys(names))


def _save(image: np.ndarray, path: Path) -> str:
    from PIL import Image

    picture = Image.fromarray(np.asarray(image, np.uint8))
    if picture.width > KEY_FRAME_WIDTH:
        picture = picture.resize((KEY_FRAME_WIDTH, round(picture.height * KEY_FRAME_WIDTH / picture.width)),
                                 Image.BILINEAR)
    picture.save(path)
    return str(path)


def clip_key_frames(clip: Path, out_dir: Path, stem: str) -> tuple[str, ...]:
    import imageio.v3 as iio

    frames = np.asarray(iio.imread(clip, plugin="FFMPEG"))
    picks = spread_frames(len(frames), KEY_FRAMES)
    return tuple(_save(frames[i], out_dir / f"{stem}_{k}.png") for k, i in enumerate(picks))


def bundle_key_frames(bundle_dir: Path, out_dir: Path, stem: str) -> tuple[tuple[str, ...], str]:
    from backend.bundle_io import read_shot_bundle
    from backend.previews import normal_preview

    passes = read_shot_bundle(bundle_dir).passes
    pictures, source = [], "clay pass" if passes[0].clay is not None else "normals pass"
    for k, i in enumerate(spread_frames(len(passes), KEY_FRAMES)):
        clay = passes[i].clay
        rgb = clay if clay is not None else normal_preview(passes[i].normal)  # the clay pass is RGB uint8
        pictures.append(_save(rgb, out_dir / f"{stem}_{k}.png"))
    return tuple(pictures), source


def workbench_key_frames(scene, camera, frames: Sequence[int], out_dir: Path, stem: str) -> tuple[str, ...]:
    """Solid-shaded renders of the camera's view (what the viewport shows), for shots without clip or passes."""
    render = scene.render
    saved = (scene.camera, render.engine, render.resolution_percentage, render.filepath,
             render.image_settings.file_format, scene.frame_current)
    paths = []
    try:
        scene.camera, render.engine = camera, "BLENDER_WORKBENCH"
        render.resolution_percentage = max(1, min(100, round(100 * KEY_FRAME_WIDTH / render.resolution_x)))
        render.image_settings.file_format = "PNG"
        import bpy

        for k, frame in enumerate(frames):
            scene.frame_set(frame)
            render.filepath = str(out_dir / f"{stem}_{k}.png")
            with bpy.context.temp_override(scene=scene):
                bpy.ops.render.render(write_still=True, scene=scene.name)
            paths.append(render.filepath)
    finally:
        (scene.camera, render.engine, render.resolution_percentage, render.filepath,
         render.image_settings.file_format) = saved[:5]
        scene.frame_set(saved[5])
    return tuple(paths)


def _lens_at(scene, camera, frame: int) -> float:
    current = scene.frame_current
    scene.frame_set(frame)
    lens = float(camera.evaluated_get(scene.view_layers[0].depsgraph).data.lens)
    scene.frame_set(current)
    return lens


def board_records(scene, key_frame_dir: Path | None = None) -> list[ShotRecord]:
    """The scene's storyboard as records, in board order; with ``key_frame_dir``, key frames written there."""
    import bpy

    from cinepregen_addon import moves
    from cinepregen_addon.properties import CAMERA_ANGLE_ITEMS, SHOT_SIZE_ITEMS

    board = getattr(scene, "cinepregen", None)
    if board is None:
        raise ValueError("the scene has no CinePreGen storyboard (is the add-on registered?)")
    sizes = {key: label for key, label, _ in SHOT_SIZE_ITEMS}
    angles = {key: label for key, label, _ in CAMERA_ANGLE_ITEMS}
    records = []
    for index, shot in enumerate(board.shots):
        if shot.camera is None:
            raise ValueError(f"shot {shot.name!r} has no camera: pick one in the CinePreGen panel")
        clip = Path(bpy.path.abspath(shot.result_path)) if shot.result_path else None
        clip = clip if clip is not None and clip.is_file() else None
        take = next((t for t in shot.takes if clip is not None and Path(bpy.path.abspath(t.clip_path)) == clip),
                    None)
        try:
            move = moves.shot_move_spec(shot).summary()
        except ValueError as error:
            move = f"(move not readable: {error})"
        key_frames: tuple[str, ...] = ()
        source = ""
        if key_frame_dir is not None:
            stem = f"{index + 1:03d}_{safe_name(shot.name)}"
            bundle = Path(bpy.path.abspath(shot.bundle_path)) if shot.bundle_path else None
            if clip is not None:
                key_frames, source = clip_key_frames(clip, key_frame_dir, stem), "clip"
            elif bundle is not None and (bundle / "shot.json").is_file():
                key_frames, source = bundle_key_frames(bundle, key_frame_dir, stem)
            else:
                shown = spread_frames(shot.frame_end - shot.frame_start + 1, KEY_FRAMES)
                frames = [shot.frame_start + i for i in shown]
                key_frames = workbench_key_frames(scene, shot.camera, frames, key_frame_dir, stem)
                source = "viewport render"
        lens_start, lens_end = (_lens_at(scene, shot.camera, f) for f in (shot.frame_start, shot.frame_end))
        records.append(ShotRecord(
            name=shot.name, frame_start=shot.frame_start, frame_end=shot.frame_end,
            size=sizes.get(shot.shot_size, shot.shot_size), angle=angles.get(shot.camera_angle, shot.camera_angle),
            lens_mm=lens_start, lens_end_mm=lens_end if abs(lens_end - lens_start) > 1e-3 else None,
            sensor_mm=float(shot.camera.data.sensor_width), move=move,
            prompt=shot.prompt, notes=shot.notes, seed=take.seed if take else shot.seed,
            model=(take.model if take else "") or board.model, clip_path=str(clip) if clip else "",
            camera=shot.camera.name, key_frames=key_frames, key_frame_source=source))
    if not records:
        raise ValueError("the storyboard has no shots to export")
    return records


def scene_rate(scene) -> Fraction:
    return frame_rate(scene.render.fps, scene.render.fps_base)


def export_board(scene, out_dir: str | Path, formats: Sequence[str] = FORMATS, title: str | None = None,
                 page_format: str = "A4", progress: ProgressFn | None = None) -> dict[str, list[str]]:
    """Write the chosen formats of the scene's board into ``out_dir``; returns format -> files written."""
    from backend.exports import cameras, storyboard_pdf, timeline

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = progress or (lambda fraction, stage: None)
    title = title or scene.name
    stem = safe_name(title)
    report(0.0, "reading the board")
    key_frame_dir = out_dir / "storyboard_frames" if "pdf" in formats else None
    if key_frame_dir is not None:
        key_frame_dir.mkdir(exist_ok=True)
    records = board_records(scene, key_frame_dir)
    rate = scene_rate(scene)
    shots = [cameras.ShotCamera(r.name, scene.cinepregen.shots[i].camera, r.frame_start, r.frame_end)
             for i, r in enumerate(records)]
    written: dict[str, list[str]] = {}
    for n, name in enumerate(formats):
        report(0.1 + 0.9 * n / len(formats), f"writing {name}")
        if name == "otio":
            files = [timeline.write_otio(records, rate, title, out_dir / f"{stem}.otio")]
        elif name == "edl":
            files = [timeline.write_edl(records, rate, title, out_dir / f"{stem}.edl")]
        elif name == "csv":
            files = [write_shot_list_csv(records, rate, out_dir / f"{stem}_shot_list.csv")]
        elif name == "pdf":
            import bpy

            fonts = Path(bpy.utils.system_resource("DATAFILES", path="fonts") or ".")
            files = [storyboard_pdf.write_storyboard_pdf(records, rate, title, out_dir / f"{stem}_storyboard.pdf",
                                                         page_format, fonts if fonts.is_dir() else None)]
        elif name == "usd":
            files = [cameras.export_board_usd(scene, shots, out_dir / f"{stem}_cameras.usda")]
        else:
            fbx_dir = out_dir / "cameras_fbx"
            fbx_dir.mkdir(exist_ok=True)
            files = [cameras.export_shot_fbx(scene, shot, fbx_dir / f"{i + 1:03d}_{safe_name(shot.name)}.fbx")
                     for i, shot in enumerate(shots)]
        written[name] = [str(f) for f in files]
    report(1.0, "done")
    return written
