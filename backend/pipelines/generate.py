"""``generate_shot``: the one generation entry point used by the CLI and the server.

Reads a shot bundle (folder or zip), runs a model of any family in ``backend.adapters``, and writes what the
Blender add-on imports: ``shot.mp4`` (H.264, yuv420p, at the bundle's fps), ``frames/000000.png ...`` and
``metrics.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ProgressFn = Callable[[float, str], None]


class GenerationCancelled(Exception):
    """Raised between denoising steps when ``should_cancel()`` returns True."""


def write_mp4(frames: np.ndarray, path: str | Path, fps: float) -> Path:
    """(F, H, W, 3) uint8 -> H.264 yuv420p mp4 at CRF 2: the codec's own 8- and 16-pixel blocks stay invisible on
    smooth previs frames (CRF 10 put the patch-grid ratio of a seam-smoothed 256x144 clip at 1.5-1.6, CRF 2 at 1.0-1.2,
    in the High profile every player reads, at about 7-10 kB per frame). Odd sizes are padded by one edge row/column
    (yuv420p needs even sizes); even sizes such as 128x72 are written as they are, H.264 crops the last macroblock
    row itself."""
    import imageio.v2 as imageio

    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    path = Path(path)
    with imageio.get_writer(path, format="FFMPEG", fps=fps, codec="libx264", pixelformat="yuv420p",
                            macro_block_size=1, quality=None, output_params=["-crf", "2"],
                            ffmpeg_log_level="error") as writer:
        for frame in frames:
            writer.append_data(frame)
    if not path.is_file() or path.stat().st_size == 0:  # ffmpeg can refuse (a rate it rounds to 0) without raising
        raise RuntimeError(f"ffmpeg wrote no clip ({len(frames)} frames at {fps:g} fps)")
    return path


def generate_frames(bundle_path: str | Path, *, weights: str | Path | None = None, steps: int | None = None,
                    seed: int | None = None, device: str = "cpu", progress: ProgressFn | None = None,
                    should_cancel: Callable[[], bool] | None = None) -> tuple[np.ndarray, dict, dict]:
    """Generate one shot's frames: ``(frames, metrics, timings)``, frames (F, H, W, 3) uint8.

    ``progress(fraction, stage)`` is called with stages "load" and "denoise" (up to 0.9); ``should_cancel()`` is
    polled between denoising steps and raises :class:`GenerationCancelled`. ``weights`` is a model folder of any
    family in ``backend.adapters`` (default ``backend/weights/previs-tiny``); a folder that is none raises
    FileNotFoundError or ValueError saying what it is instead."""
    from backend.adapters import load_model
    from backend.bundle_io import read_shot_bundle
    from backend.pipelines.previs_pipeline import DEFAULT_WEIGHTS

    report = progress or (lambda fraction, stage: None)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    report(0.0, "load")
    bundle = read_shot_bundle(bundle_path)
    weights = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    model, kept = load_model(weights, device)
    timings["load_s"] = time.perf_counter() - start

    def on_step(done: int, total: int) -> None:
        if should_cancel is not None and should_cancel():
            raise GenerationCancelled(f"generation of shot {bundle.name!r} cancelled after {done}/{total} steps")
        report(0.05 + 0.85 * done / total, "denoise")

    if should_cancel is not None and should_cancel():
        raise GenerationCancelled(f"generation of shot {bundle.name!r} cancelled before it started")
    mark = time.perf_counter()
    seed = bundle.seed if seed is None else seed
    steps = model.default_steps if steps is None else steps
    clip = model.generate(bundle, steps=steps, seed=seed, callback=on_step)
    timings["denoise_s"] = time.perf_counter() - mark
    frames = (clip * 255).round().astype(np.uint8)
    metrics = {
        "shot": bundle.name, "frames": int(frames.shape[0]), "resolution": [bundle.width, bundle.height],
        "fps": bundle.fps, "steps": int(steps), "seed": int(seed), "weights": weights.name, "device": device,
        "model_was_loaded": kept, "seconds_per_frame": timings["denoise_s"] / frames.shape[0],
    }
    return frames, metrics, timings


def write_shot(frames: np.ndarray, out_dir: str | Path, metrics: dict, timings: dict) -> dict:
    """Write what the add-on imports into ``out_dir``: ``frames/000000.png ...``, ``shot.mp4`` at the shot's fps
    and ``metrics.json``. Returns ``{"mp4", "frames_dir", "metrics", "timings"}``."""
    from cinepregen_addon.core.png_codec import write_png

    mark = time.perf_counter()
    out_dir = Path(out_dir)
    frames_dir = out_dir / "frames"
    frames_dir.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        write_png(frames_dir / f"{i:06d}.png", frame)
    mp4 = write_mp4(frames, out_dir / "shot.mp4", metrics["fps"])
    timings = {**timings, "write_s": time.perf_counter() - mark}
    timings["total_s"] = sum(timings.get(k, 0.0) for k in ("load_s", "denoise_s", "write_s"))
    metrics = {**metrics, "timings": timings}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return {"mp4": str(mp4), "frames_dir": str(frames_dir), "metrics": metrics, "timings": timings}


def generate_shot(bundle_path: str | Path, out_dir: str | Path, *, weights: str | Path | None = None,
                  steps: int | None = None, seed: int | None = None, device: str = "cpu",
                  progress: ProgressFn | None = None, should_cancel: Callable[[], bool] | None = None) -> dict:
    """Generate one shot (``generate_frames``) and write it (``write_shot``). Returns ``{"mp4", "frames_dir",
    "metrics", "timings"}``; ``progress`` sees the stages "load", "denoise", "write", "done"."""
    report = progress or (lambda fraction, stage: None)
    frames, metrics, timings = generate_frames(bundle_path, weights=weights, steps=steps, seed=seed, device=device,
                                               progress=report, should_cancel=should_cancel)
    report(0.9, "write")
    result = write_shot(frames, out_dir, metrics, timings)
    report(1.0, "done")
    return result
