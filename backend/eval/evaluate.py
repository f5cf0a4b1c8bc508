"""Evaluate a previs generator on shot bundles: the model and its baselines in one run, one table.

The generator is injected as ``generate_fn(bundle, *, references_override=None, independent_frames=False,
masked=True, seed) -> (F, H, W, 3) float clip in [0, 1]``, so the same harness scores the trained pipeline and any
simple reference generator. ``references_override`` is the complete mapping object id -> RGB uint8 reference that
replaces ``bundle.reference_images`` for that call. Baselines: frames generated independently (temporal
consistency, structure) and unmasked IP attention (leakage).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from backend.bundle_io import read_shot_bundle
from backend.eval import metrics
from backend.reference_pictures import subject_colour
from cinepregen_addon.core.shot_bundle import ShotBundle

GenerateFn = Callable[..., np.ndarray]
ProgressFn = Callable[[float, str], None]


def load_target_frames(bundle_path: str | Path) -> np.ndarray | None:
    """The bundle's target clip as (F, H, W, 3) floats in [0, 1], or None when it has none.

    Looked up as ``target/000000.png ...`` inside the bundle folder, or as the ``target.npz`` beside it (the layout
    of a ``cinepregen dataset build`` shot: ``shot_XXXXX/bundle/`` and ``shot_XXXXX/target.npz``)."""
    from PIL import Image

    bundle_path = Path(bundle_path)
    files = sorted((bundle_path / "target").glob("*.png"))
    if files:
        return np.stack([np.asarray(Image.open(f).convert("RGB"), dtype=np.float64) / 255.0 for f in files])
    beside = bundle_path.parent / "target.npz"
    if bundle_path.is_dir() and beside.is_file():
        return np.load(beside)["frames"].astype(np.float64) / 255.0
    return None


def _generate(generate_fn: GenerateFn, bundle: ShotBundle, seed: int, **options) -> np.ndarray:
    clip = np.asarray(generate_fn(bundle, seed=seed, **options), dtype=np.float64)
    expected = (len(bundle.passes), bundle.height, bundle.width, 3)
    if clip.shape != expected:
        raise ValueError(f"generate_fn returned a {clip.shape} clip for bundle {bundle.name!r}, expected {expected}")
    return clip


def clip_metrics(clip: np.ndarray, bundle: ShotBundle) -> dict:
    """Metrics that need only one clip and the bundle's guidance passes: temporal consistency and structure."""
    frame_numbers = [camera.frame for camera in bundle.cameras]
    consecutive = all(b - a == 1 for a, b in zip(frame_numbers, frame_numbers[1:], strict=False))
    temporal = metrics.temporal_warping_error(
        clip,
        [p.depth for p in bundle.passes],
        [p.object_id for p in bundle.passes],
        [c.K for c in bundle.cameras],
        [c.world_to_camera for c in bundle.cameras],
        vectors=[p.vector for p in bundle.passes] if consecutive else None,
    )
    scores = [
        metrics.edge_f_score(metrics.image_edges(frame), metrics.guidance_edges(p.object_id, p.depth))
        for frame, p in zip(clip, bundle.passes, strict=True)
    ]
    return {
        "warping_error": temporal["mean"],
        "warping_valid_fraction": temporal["valid_fraction"],
        "edge_f_score": float(np.mean([s["f_score"] for s in scores])),
        **grid_ratios(clip, bundle),
    }


def grid_ratios(clip: np.ndarray, bundle: ShotBundle) -> dict:
    """The patch-grid ratio of the clip as delivered (through the mp4), over the whole frame and inside objects."""
    delivered = through_mp4(clip, bundle.fps)
    return {"patch_grid_ratio": metrics.patch_grid_ratio(delivered),
            "patch_grid_ratio_inside_objects": metrics.patch_grid_ratio(
                delivered, object_ids=np.stack([p.object_id for p in bundle.passes]))}


def through_mp4(clip: np.ndarray, fps: float) -> np.ndarray:
    """The clip as the artist gets it: written to H.264 as the backend delivers it, and read back with the chroma
    interpolated (ffmpeg's ``full_chroma_int``), as a player that upsamples 4:2:0 chroma properly shows it. (ffmpeg's
    default RGB conversion repeats each chroma sample over two pixels: every even pixel border then carries the
    chroma steps, which raised the patch-grid ratio of the Cycles targets themselves from 1.0 to 1.2-1.4.)"""
    import tempfile

    import imageio.v2 as imageio

    from backend.pipelines.generate import write_mp4

    frames = (np.clip(clip, 0, 1) * 255).round().astype(np.uint8)
    with tempfile.TemporaryDirectory(prefix="cinepregen-eval-") as tmp:
        path = write_mp4(frames, Path(tmp) / "clip.mp4", fps)
        reader = imageio.get_reader(path, format="FFMPEG",
                                    output_params=["-sws_flags", "bicubic+full_chroma_int+accurate_rnd"])
        try:
            decoded = np.stack([frame for frame in reader])  # list() asks the reader its length: inf
        finally:
            reader.close()
    return decoded[:, :clip.shape[1], :clip.shape[2]]


def _drift(clip: np.ndarray, target: np.ndarray | None, object_ids: np.ndarray, names: dict[int, str]) -> dict:
    """Colour drift per object (``metrics.colour_drift``) of the clip and of the target, and the largest over the
    objects whose target stays within 10% (the others change colour in the render too: light, shadow)."""
    clip_drift = metrics.colour_drift(clip, object_ids)
    target_drift = metrics.colour_drift(target, object_ids) if target is not None else {}
    steady = [i for i in clip_drift if target is None or target_drift.get(i, 1.0) <= 0.1]
    if target is not None and target_is_black(target):
        steady = []  # a relative change of colour between two black means is noise
    return {
        "objects": {names.get(i, str(i)): {"clip": d, "target": target_drift.get(i)} for i, d in clip_drift.items()},
        "max": max((clip_drift[i] for i in steady), default=None),
        "target_max": max((target_drift[i] for i in steady if i in target_drift), default=None),
        "within_10_percent": (sum(clip_drift[i] <= 0.1 for i in steady) / len(steady)) if steady else None,
    }


def _fidelity(clip: np.ndarray, target: np.ndarray, bundle: ShotBundle, object_ids: np.ndarray) -> dict:
    if target.shape != clip.shape:
        raise ValueError(f"target clip {target.shape} does not match the generated clip {clip.shape}")
    per_object = {}
    for obj in bundle.objects:
        masks = object_ids == obj.id
        if masks.any():
            per_object[obj.name] = {
                "psnr": metrics.psnr(clip, target, masks),
                "ssim": float(np.nanmean([metrics.ssim(c, t, m) for c, t, m in zip(clip, target, masks, strict=True)])),
            }
    return {
        "psnr": metrics.psnr(clip, target),
        "mse": float(np.mean((np.asarray(clip, np.float64) - target) ** 2)),
        "target_black": target_is_black(target),
        "ssim": float(np.mean([metrics.ssim(c, t) for c, t in zip(clip, target, strict=True)])),
        "objects": per_object,
        "masked_psnr": _mean([o["psnr"] for o in per_object.values()]),
        "masked_ssim": _mean([o["ssim"] for o in per_object.values()]),
    }


def _referenced_objects_by_area(bundle: ShotBundle, object_ids: np.ndarray) -> list[int]:
    """Ids of objects that have a reference and are visible, largest on screen first."""
    areas = {o.id: int((object_ids == o.id).sum()) for o in bundle.objects if o.id in bundle.reference_images}
    return sorted((i for i, a in areas.items() if 0 < a < object_ids.size), key=lambda i: -areas[i])


def evaluate_bundle(
    bundle: ShotBundle,
    generate_fn: GenerateFn,
    *,
    seed: int = 0,
    target_frames: np.ndarray | None = None,
    progress: ProgressFn | None = None,
) -> dict:
    """Score one shot bundle: the model's clip and, in the same run, its baselines and reference edits."""
    report = progress or (lambda fraction, stage: None)
    object_ids = np.stack([p.object_id for p in bundle.passes])
    names = {o.id: o.name for o in bundle.objects}
    result: dict = {"name": bundle.name, "frames": len(bundle.passes), "resolution": [bundle.width, bundle.height]}

    report(0.0, "model")
    clip = _generate(generate_fn, bundle, seed)
    report(0.2, "independent frames baseline")
    independent = _generate(generate_fn, bundle, seed, independent_frames=True)
    result["model"] = clip_metrics(clip, bundle)
    result["independent_frames"] = clip_metrics(independent, bundle)
    target = None if target_frames is None else np.asarray(target_frames, dtype=np.float64)
    if target is not None and target.max() > 1.0:
        target = target / 255.0
    result["fidelity"] = None if target is None else _fidelity(clip, target, bundle, object_ids)
    if target is not None:
        grid = grid_ratios(target, bundle)
        result["fidelity"].update({f"target_{name}": value for name, value in grid.items()})
    result["drift"] = _drift(clip, target, object_ids, names)

    referenced = _referenced_objects_by_area(bundle, object_ids)
    references = dict(bundle.reference_images)
    result["leakage"] = None
    if referenced:
        edited_id = referenced[0]
        edited = {**references, edited_id: 255 - np.asarray(references[edited_id], dtype=np.uint8)}
        mask = object_ids == edited_id
        leakage = {"object": names[edited_id]}
        for label, masked in (("masked", True), ("unmasked", False)):
            report(0.4 if masked else 0.6, f"reference edit, {label} IP attention")
            before = clip if masked else _generate(generate_fn, bundle, seed, masked=False)
            after = _generate(generate_fn, bundle, seed, references_override=edited, masked=masked)
            leakage[label] = metrics.change_ratio(before, after, mask)
        result["leakage"] = leakage

    result["binding"] = None
    if len(referenced) >= 2:
        a, b = referenced[:2]
        report(0.8, "reference swap")
        swap = {**references, a: references[b], b: references[a]}
        swapped = _generate(generate_fn, bundle, seed, references_override=swap)
        pair = {a: subject_colour(references[a])[0], b: subject_colour(references[b])[0]}
        result["binding"] = {
            "objects": [names[a], names[b]],
            "before_swap": metrics.binding_accuracy(clip, object_ids, pair, {a: a, b: b}),
            "after_swap": metrics.binding_accuracy(swapped, object_ids, pair, {a: b, b: a}),
            "target": None if target is None else metrics.binding_accuracy(target, object_ids, pair, {a: a, b: b}),
        }
    report(1.0, "done")
    result["clip"] = clip  # for pictures (contact sheets); write_report leaves it out
    return result


# A target render with no pixel above this (a night shot with no light in view) is left out of the per-shot means of
# the rows compared with the target (fidelity, patch grid): any dark clip scores tens of dB there, a clip that is
# exactly black infinitely many, and the grid ratio of a black clip is one of steps below a code value (2.57 on
# held-out shot 1000001, whose target has none to compare). The pooled PSNR (from the mean squared error over all
# shots) keeps every shot; the per-shot figures stay in each bundle's result.
BLACK_LEVEL = 2 / 255


def target_is_black(target: np.ndarray) -> bool:
    return bool(target.max() <= BLACK_LEVEL)


def _mean(values: Sequence[float | None]) -> float:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


INDEPENDENT = ("independent_frames", "independent frames")
UNMASKED = ("leakage", "unmasked", "ratio")
# (row label, path to the model's value, path to the baseline's value or None, what the baseline is)
SUMMARY_ROWS = (
    ("warping error (lower is better)", ("model", "warping_error"), (INDEPENDENT[0], "warping_error"), INDEPENDENT[1]),
    ("edge F-score within 2 px", ("model", "edge_f_score"), (INDEPENDENT[0], "edge_f_score"), INDEPENDENT[1]),
    ("PSNR vs target (dB)", ("fidelity", "psnr"), None, ""),
    ("SSIM vs target", ("fidelity", "ssim"), None, ""),
    ("masked PSNR vs target (dB, mean over objects)", ("fidelity", "masked_psnr"), None, ""),
    ("masked SSIM vs target (mean over objects)", ("fidelity", "masked_ssim"), None, ""),
    ("leakage: outside/inside change ratio", ("leakage", "masked", "ratio"), UNMASKED, "unmasked IP attention"),
    ("binding accuracy before swap", ("binding", "before_swap"), ("binding", "target"), "the Cycles target"),
    ("binding accuracy after swap (follows the swap)", ("binding", "after_swap"), None, ""),
    ("patch-grid ratio on the delivered mp4 (aim <= 1.15)", ("model", "patch_grid_ratio"),
     ("fidelity", "target_patch_grid_ratio"), "the Cycles target"),
    ("patch-grid ratio inside objects (outlines left out)", ("model", "patch_grid_ratio_inside_objects"),
     ("fidelity", "target_patch_grid_ratio_inside_objects"), "the Cycles target"),
    ("colour drift, last vs first quarter (max over steady objects)", ("drift", "max"), ("drift", "target_max"),
     "the Cycles target"),
    ("objects with colour drift <= 10%", ("drift", "within_10_percent"), None, ""),
)


POOLED_PSNR = "PSNR of the mean squared error over every shot (dB, black targets too)"


def _lookup(result: dict, path: Sequence[str]) -> float | None:
    """The value at ``path`` in a bundle's result, None where that part was not measured."""
    value = result
    for key in path:
        if not isinstance(value, dict) or value.get(key) is None:
            return None
        value = value[key]
    return value


def evaluate_bundles(
    bundle_paths: Sequence[str | Path],
    generate_fn: GenerateFn,
    *,
    seed: int = 0,
    target_frames: Sequence[np.ndarray | None] | None = None,
    progress: ProgressFn | None = None,
) -> dict:
    """Score every bundle and summarise. ``target_frames`` (one entry per bundle, None for none) overrides a bundle
    folder's own ``target/`` clip; without either, PSNR/SSIM are left out for that bundle."""
    if target_frames is not None and len(target_frames) != len(bundle_paths):
        raise ValueError(f"got {len(target_frames)} target clips for {len(bundle_paths)} bundles")
    if not bundle_paths:
        raise ValueError("no shot bundles to evaluate")
    results = []
    for i, path in enumerate(bundle_paths):
        target = target_frames[i] if target_frames is not None else None
        if target is None and Path(path).is_dir():
            target = load_target_frames(path)
        step = (lambda f, stage, i=i: progress((i + f) / len(bundle_paths), stage)) if progress else None
        result = evaluate_bundle(read_shot_bundle(path), generate_fn, seed=seed, target_frames=target, progress=step)
        results.append({"path": str(path), **result})
    visible = [r for r in results if not _lookup(r, ("fidelity", "target_black"))]
    summary = []
    for label, model_path, baseline_path, baseline_name in SUMMARY_ROWS:
        scored = visible if "fidelity" in (model_path[0], baseline_path and baseline_path[0]) else results
        summary.append({
            "metric": label,
            "model": _mean([_lookup(r, model_path) for r in scored]),
            "baseline": _mean([_lookup(r, baseline_path) for r in scored]) if baseline_path else None,
            "baseline_name": baseline_name or None,
            "bundles": sum(_lookup(r, model_path) is not None for r in scored),
        })
    errors = [_lookup(r, ("fidelity", "mse")) for r in results]
    errors = [e for e in errors if e is not None]
    if errors:
        pooled = float(np.mean(errors))
        summary.append({"metric": POOLED_PSNR, "model": math.inf if pooled == 0 else 10 * math.log10(1 / pooled),
                        "baseline": None, "baseline_name": None, "bundles": len(errors)})
    return {"seed": seed, "summary": summary, "bundles": results}


def _format(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return "inf" if math.isinf(value) else f"{value:.4f}"


def format_markdown(evaluation: dict) -> str:
    """The summary as a markdown table (means over bundles), then one line per bundle."""
    lines = [
        f"# Evaluation: {len(evaluation['bundles'])} shot bundle(s), seed {evaluation['seed']}",
        "",
        "| metric | model | baseline | baseline is | bundles |",
        "|---|---:|---:|---|---:|",
    ]
    for row in evaluation["summary"]:
        lines.append(
            f"| {row['metric']} | {_format(row['model'])} | {_format(row['baseline'])} | "
            f"{row['baseline_name'] or '–'} | {row['bundles']} |"
        )
    lines += [
        "",
        "| bundle | frames | warping error | independent frames | edge F | leakage ratio | unmasked |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in evaluation["bundles"]:
        cells = [
            _lookup(r, ("model", "warping_error")),
            _lookup(r, ("independent_frames", "warping_error")),
            _lookup(r, ("model", "edge_f_score")),
            _lookup(r, ("leakage", "masked", "ratio")),
            _lookup(r, ("leakage", "unmasked", "ratio")),
        ]
        lines.append(f"| {r['name']} | {r['frames']} | " + " | ".join(_format(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _json_safe(value):
    """nan (not measured) becomes null and inf (identical images) the string "inf": neither is valid JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None
        return float(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, np.integer):
        return int(value)
    return value


def contact_sheet(evaluation: dict, shots: int = 8):
    """Per evaluated shot (the first ``shots``): depth and object-ID passes, the target (when there is one) and the
    generated clip at its first, middle and last frames. Returns a PIL image."""
    from backend.previews import depth_preview, depth_range, labelled_grid, object_id_preview

    rows = []
    for result in evaluation["bundles"][:shots]:
        bundle = read_shot_bundle(result["path"])
        clip = result["clip"]
        picks = [0, len(clip) // 2, len(clip) - 1]
        near, far = depth_range([p.depth for p in bundle.passes])
        cells = [depth_preview(bundle.passes[0].depth, near, far), object_id_preview(bundle.passes[0].object_id)]
        target = load_target_frames(result["path"])
        label = f"{bundle.name}\npasses | "
        if target is not None:
            cells += [np.round(target[i] * 255).astype(np.uint8) for i in picks]
            label += "target | "
        cells += [np.round(clip[i] * 255).astype(np.uint8) for i in picks]
        psnr = _lookup(result, ("fidelity", "psnr"))
        rows.append((label + "generated" + (f"\nPSNR {psnr:.1f} dB" if psnr is not None else ""), cells))
    return labelled_grid(rows)


def write_report(evaluation: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``eval.md`` and ``eval.json`` into ``out_dir`` and return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown, report = out_dir / "eval.md", out_dir / "eval.json"
    markdown.write_text(format_markdown(evaluation))
    stored = {**evaluation, "bundles": [{k: v for k, v in r.items() if k != "clip"} for r in evaluation["bundles"]]}
    report.write_text(json.dumps(_json_safe(stored), indent=2, allow_nan=False))
    return markdown, report
