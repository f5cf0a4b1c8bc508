"""``cinepregen bench <benchmark>``: throughput figures measured on this machine.

Each benchmark is one subcommand; ``BENCHMARKS`` lists the functions that add them (``add(benchmarks)`` gets the
``bench`` sub-subparsers). A new benchmark (``bench generate``, ``bench vq``) is one more function in that list,
with its heavy imports inside its handler.
"""

from __future__ import annotations

import argparse
import re
import time


def _resolutions(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        match = re.fullmatch(r"(\d+)x(\d+)", item.strip())
        if not match:
            raise argparse.ArgumentTypeError(f"resolutions must look like 256x144,512x288, got {text!r}")
        sizes.append((int(match[1]), int(match[2])))
    return sizes


def bench_passes(resolutions: list[tuple[int, int]], frames: int, out_dir) -> list[dict]:
    """Pass-render throughput of a 3-object shot with object and camera motion, Cycles CPU.

    ``render_fps`` counts the Cycles animation render alone; ``bundle_fps`` the whole job a user waits for
    (render, EXR reading, conversion, compressed bundle writing). A 2-frame warm-up loads Cycles' kernels first.
    """
    from pathlib import Path

    from backend.blender.scenes import build_test_scene
    from cinepregen_addon.render_passes import ShotRenderSpec, render_shot_bundle

    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    rows = []
    for i, resolution in enumerate([resolutions[0], *resolutions]):
        warm_up = i == 0
        n = 2 if warm_up else frames
        info = build_test_scene(n_objects=3, moving=True, camera_move="truck", frame_end=n, resolution=resolution)
        spec = ShotRenderSpec(name="bench", camera_name=info["camera"], frame_start=1, frame_end=n,
                              resolution=resolution)
        marks = {}

        def progress(fraction, stage, marks=marks):
            if stage == "render":
                marks["rendered"] = time.perf_counter()

        start = time.perf_counter()
        render_shot_bundle(info["scene"], spec, Path(out_dir) / f"run{i}", progress)
        end = time.perf_counter()
        if not warm_up:
            rows.append({"resolution": resolution, "frames": n,
                         "render_fps": n / (marks["rendered"] - start), "bundle_fps": n / (end - start)})
    return rows


def _run_passes(args) -> int:
    import os
    import tempfile

    import bpy

    with tempfile.TemporaryDirectory(prefix="cinepregen-bench-") as tmp:
        rows = bench_passes(args.resolutions, args.frames, tmp)
    threads = bpy.context.scene.render.threads
    print(f"Cycles CPU, 1 sample, {threads} render threads, {os.cpu_count()} cores, 3 objects, {args.frames} frames")
    print(f"{'resolution':>12} {'frames':>7} {'render fps':>11} {'bundle fps':>11}")
    for row in rows:
        width, height = row["resolution"]
        print(f"{f'{width}x{height}':>12} {row['frames']:>7} {row['render_fps']:>11.1f} {row['bundle_fps']:>11.1f}")
    return 0


def _add_passes(benchmarks) -> None:
    parser = benchmarks.add_parser("passes", help="guidance-pass render throughput (frames/s)")
    parser.add_argument("--resolutions", type=_resolutions, default="256x144,512x288",
                        help="comma-separated WIDTHxHEIGHT list (default: 256x144,512x288)")
    parser.add_argument("--frames", type=int, default=24, help="frames per shot (default: 24)")
    parser.set_defaults(func=_run_passes)


BENCHMARKS = [_add_passes]


def add_parser(subparsers):
    parser = subparsers.add_parser("bench", help="measure throughput on this machine")
    benchmarks = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for add in BENCHMARKS:
        add(benchmarks)
