"""The review board served at ``/``: every job with its guidance-pass thumbnails, its clip, metrics and timings.

Thumbnails are made once, when a bundle is accepted, so the board never reads frame data while serving.
The page is server-rendered HTML; a small script polls ``/v1/jobs`` and updates each job's status and progress in
place, reloading only when a job finishes or a new one arrives (to show its clip and figures).
"""

from __future__ import annotations

import html
from pathlib import Path
from string import Template
from typing import Any

import numpy as np
from PIL import Image

from backend.previews import depth_preview, depth_range, normal_preview, object_id_preview, spread_frames

PREVIEW_PASSES = ("depth", "normal", "object_id")
_TEMPLATE = Template((Path(__file__).with_name("review.html")).read_text())


def write_pass_previews(bundle: Any, out_dir: Path, thumbnails: int = 4, height: int = 72) -> list[str]:
    """One PNG strip per guidance pass (``depth.png``, ``normal.png``, ``object_id.png``) of ``thumbnails`` frames
    spread over the shot; returns the pass names written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    picks = spread_frames(len(bundle.passes), thumbnails)
    near, far = depth_range([p.depth for p in bundle.passes])
    width = max(1, round(bundle.width * height / bundle.height))
    for name in PREVIEW_PASSES:
        tiles = []
        for index in picks:
            passes = bundle.passes[index]
            if name == "depth":
                rgb = depth_preview(passes.depth, near, far)
            elif name == "normal":
                rgb = normal_preview(passes.normal)
            else:
                rgb = object_id_preview(passes.object_id)
            resample = Image.NEAREST if name == "object_id" else Image.BILINEAR
            tiles.append(np.asarray(Image.fromarray(rgb).resize((width, height), resample)))
        gap = np.zeros((height, 2, 3), np.uint8)
        strip = np.concatenate([part for tile in tiles for part in (tile, gap)][:-1], axis=1)
        Image.fromarray(strip).save(out_dir / f"{name}.png")
    return list(PREVIEW_PASSES)


METRIC_LABELS = {
    "frames": "frames", "resolution": "resolution", "fps": "fps", "steps": "sampling steps", "seed": "seed",
    "weights": "model", "device": "device", "seconds_per_frame": "seconds per frame",
    "load_s": "load (s)", "denoise_s": "denoise (s)", "write_s": "write (s)", "total_s": "total (s)",
    "queued_s": "waited in queue (s)", "generate_s": "generation (s)",
}
HIDDEN_METRICS = {"shot", "timings"}  # the shot's name heads the row; timings have their own column


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return " x ".join(_format_value(v) for v in value)
    return str(value)


def _flatten(values: dict) -> list[tuple[str, Any]]:
    rows = []
    for key, value in values.items():
        if key in HIDDEN_METRICS:
            continue
        if isinstance(value, dict):
            rows += _flatten(value)
        else:
            rows.append((METRIC_LABELS.get(key, key.replace("_", " ")), value))
    return rows


def _key_values(values: dict) -> str:
    rows = _flatten(values) if isinstance(values, dict) else []
    if not rows:
        return ""
    cells = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(_format_value(v))}</td></tr>" for k, v in rows)
    return f'<table class="kv">{cells}</table>'


def _job_row(job: dict[str, Any], metrics: dict | None, take: int, takes: int) -> str:
    job_id = job["id"]
    base = f"/v1/jobs/{job_id}"
    info = job["info"]
    resolution = info.get("resolution") or ["?", "?"]
    label = f"take {take} of {takes}" if takes > 1 else "take 1"
    shot = (
        f"<b>{html.escape(job['name'])}</b> <span class=\"take\">{label}</span><br><code>{job_id[:8]}</code><br>"
        f"{info.get('frames', '?')} frames, {resolution[0]}&times;{resolution[1]}"
    )
    if info.get("prompt"):
        shot += f'<div class="prompt">&ldquo;{html.escape(info["prompt"][:300])}&rdquo;</div>'
    references = info.get("references") or []
    if references:
        images = "".join(f'<img src="{base}/references/{i}.png" alt="{html.escape(name)}" title="{html.escape(name)}">'
                         for i, name in enumerate(references))
        shot += f'<div class="references">{images}</div>'
    finished = job["status"] in ("done", "failed", "cancelled")
    state = (f'<span class="status">{html.escape(job["status"])}</span> <span class="stage">'
             f'{html.escape(job["stage"]) if job["stage"] != job["status"] else ""}</span><br>'
             f'<progress value="{job["progress"]:.3f}" max="1"></progress>')
    if job["error"]:
        state += f'<div class="error">{html.escape(job["error"][:500])}</div>'
    state += (f'<div class="actions"><button class="cancel" data-job="{job_id}"{" hidden" if finished else ""}>'
              f'Cancel</button><button class="retry" data-job="{job_id}"{"" if finished else " hidden"}>Retry'
              "</button></div>")
    passes = "".join(
        f'<img src="{base}/previews/{name}.png" alt="{name} pass" title="{name}">' for name in info.get("previews", [])
    )
    clip = ""
    if job["status"] == "done":
        clip = (
            f'<video id="clip-{job_id}" src="{base}/result.mp4" controls loop muted autoplay playsinline '
            'preload="metadata"></video>'
        )
    timings = _key_values(job["timings"])
    status = html.escape(job["status"])
    return (
        f'<tr id="job-{job_id}" class="job status-{status}" data-status="{status}" '
        f'data-rendered-stage="{html.escape(job["stage"])}">'
        f'<td class="shot">{shot}</td><td class="state">{state}</td><td class="passes">{passes}</td>'
        f'<td class="clip">{clip}</td><td class="metrics">{_key_values((metrics or {}).get("metrics", {}))}'
        f'{f"<details><summary>timings</summary>{timings}</details>" if timings else ""}</td></tr>'
    )


def render_board(jobs: list[dict[str, Any]], metrics: dict[str, dict]) -> str:
    """The board's HTML; ``metrics`` maps a finished job's id to its ``metrics.json``. Takes of one shot (jobs with
    the same name) are grouped under it, newest first; the page follows running jobs by polling the API."""
    counts = {status: sum(job["status"] == status for job in jobs) for status in ("queued", "running", "done")}
    shots: dict[str, list[dict[str, Any]]] = {}
    for job in sorted(jobs, key=lambda j: j["created"]):
        shots.setdefault(job["name"], []).append(job)
    groups = []
    for name, takes in sorted(shots.items(), key=lambda item: -item[1][-1]["created"]):
        rows = [_job_row(job, metrics.get(job["id"]), i + 1, len(takes)) for i, job in reversed(list(enumerate(takes)))]
        groups.append(f'<tbody class="shot-group"><tr class="group"><th colspan="5">{html.escape(name)} '
                      f'<span class="take">{len(takes)} take{"s" if len(takes) > 1 else ""}</span></th></tr>'
                      + "\n".join(rows) + "</tbody>")
    return _TEMPLATE.substitute(
        summary=f"{len(jobs)} jobs: {counts['running']} running, {counts['queued']} queued, {counts['done']} done",
        groups="\n".join(groups)
        or '<tbody><tr><td colspan="5">No jobs yet: press Generate in Blender.</td></tr></tbody>',
    )
