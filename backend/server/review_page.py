"""The review board served at ``/``: every job with its guidance-pass thumbnails, its clip, metrics and timings.

Thumbnails are made once, when a bundle is accepted, so the board never reads frame data while serving.
The page is plain server-rendered HTML (it reloads itself while jobs are still queued or running).
"""

from __future__ import annotations

import html
from pathlib import Path
from string import Template
from typing import Any

import numpy as np
from PIL import Image

from backend.previews import depth_preview, depth_range, normal_preview, object_id_preview

PREVIEW_PASSES = ("depth", "normal", "object_id")
_TEMPLATE = Template((Path(__file__).with_name("review.html")).read_text())


def write_pass_previews(bundle: Any, out_dir: Path, thumbnails: int = 4, height: int = 72) -> list[str]:
    """One PNG strip per guidance pass (``depth.png``, ``normal.png``, ``object_id.png``) of ``thumbnails`` frames
    spread over the shot; returns the pass names written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    count = len(bundle.passes)
    shown = min(thumbnails, count)
    picks = [round(i * (count - 1) / max(shown - 1, 1)) for i in range(shown)]
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


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _flatten(values: dict, prefix: str = "") -> list[tuple[str, Any]]:
    rows = []
    for key, value in values.items():
        if isinstance(value, dict):
            rows += _flatten(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


def _key_values(values: dict) -> str:
    if not values:
        return ""
    cells = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(_format_value(v))}</td></tr>" for k, v in _flatten(values)
    )
    return f'<table class="kv">{cells}</table>'


def _job_row(job: dict[str, Any], metrics: dict | None) -> str:
    job_id = job["id"]
    base = f"/v1/jobs/{job_id}"
    info = job["info"]
    resolution = info.get("resolution") or ["?", "?"]
    shot = (
        f"<b>{html.escape(job['name'])}</b><br><code>{job_id[:8]}</code><br>"
        f"{info.get('frames', '?')} frames, {resolution[0]}&times;{resolution[1]}"
    )
    state = f'{html.escape(job["status"])}<br><progress value="{job["progress"]:.3f}" max="1"></progress>'
    if job["stage"] != job["status"]:
        state += f" {html.escape(job['stage'])}"
    if job["error"]:
        state += f'<div class="error">{html.escape(job["error"])}</div>'
    passes = "".join(
        f'<img src="{base}/previews/{name}.png" alt="{name} pass" title="{name}">' for name in info.get("previews", [])
    )
    clip = ""
    if job["status"] == "done":
        clip = (
            f'<video id="clip-{job_id}" src="{base}/result.mp4" controls loop muted autoplay playsinline '
            'preload="metadata"></video>'
        )
    return (
        f'<tr id="job-{job_id}" class="job status-{html.escape(job["status"])}">'
        f'<td class="shot">{shot}</td><td class="state">{state}</td><td class="passes">{passes}</td>'
        f'<td class="clip">{clip}</td><td class="metrics">{_key_values((metrics or {}).get("metrics", {}))}</td>'
        f'<td class="timings">{_key_values(job["timings"])}</td></tr>'
    )


def render_board(jobs: list[dict[str, Any]], metrics: dict[str, dict]) -> str:
    """The board's HTML; ``metrics`` maps a finished job's id to its ``metrics.json``."""
    counts = {status: sum(job["status"] == status for job in jobs) for status in ("queued", "running", "done")}
    active = counts["queued"] + counts["running"]
    return _TEMPLATE.substitute(
        refresh='<meta http-equiv="refresh" content="3">' if active else "",
        summary=f"{len(jobs)} jobs: {counts['running']} running, {counts['queued']} queued, {counts['done']} done",
        rows="\n".join(_job_row(job, metrics.get(job["id"])) for job in jobs)
        or '<tr><td colspan="6">No jobs yet: press Generate in Blender.</td></tr>',
    )
