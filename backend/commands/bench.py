"""``cinepregen bench <benchmark>``: throughput figures measured on this machine.

Each benchmark is one subcommand; ``BENCHMARKS`` lists the functions that add them (``add(benchmarks)`` gets the
``bench`` sub-subparsers). A new benchmark is one more function in that list, with its heavy
imports inside its handler. Every benchmark measures its baseline in the same run and prints ratios against it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path


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


def _bundle_paths(spec: str) -> list:
    from backend.commands.eval import find_bundles

    try:
        return find_bundles([spec])
    except ValueError as error:
        raise SystemExit(f"cinepregen bench: {error}") from None


def measure_generation(weights: str, mode: str | None, bundle_path: str, repeats: int) -> dict:
    """Best wall time of ``repeats`` generations of the shot at the weights' default settings (after one warm-up),
    and the process's peak resident memory before loading the model and after generating. Run it in a fresh
    process per variant (``bench generate`` does), so peaks are the variant's own."""
    import resource

    from backend.pipelines.previs_pipeline import PrevisPipeline
    from backend.quant.vq_linear import set_quantized_mode
    from cinepregen_addon.core.shot_bundle import read_bundle

    def peak_rss() -> int:  # ru_maxrss is in KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    bundle = read_bundle(bundle_path)
    before = peak_rss()
    pipeline = PrevisPipeline.from_pretrained(weights)
    if mode is not None:
        set_quantized_mode(pipeline.transformer, mode)
    pipeline(bundle, seed=0)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        pipeline(bundle, seed=0)
        times.append(time.perf_counter() - start)
    return {"seconds": min(times), "peak_rss": peak_rss(), "rss_before_model": before,
            "steps": pipeline.sampling["num_inference_steps"], "frames": len(bundle.passes),
            "size": (bundle.width, bundle.height)}


def _run_generate(args) -> int:
    """Seconds per shot and peak memory at default settings: the full-precision weights and, in the same run,
    quantized variants in both of their modes, each in its own process."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    import torch

    from backend.pipelines.previs_pipeline import DEFAULT_WEIGHTS

    bundle = str(_bundle_paths(args.bundle)[0])
    variants = [(str(args.weights or DEFAULT_WEIGHTS), None, Path(args.weights or DEFAULT_WEIGHTS).name)]
    for folder in args.quantized or []:
        variants += [(folder, "cached", f"{Path(folder).name}, dequantize once"),
                     (folder, "per_call", f"{Path(folder).name}, dequantize per call")]
    rows = []
    for weights, mode, name in variants:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows.append((name, pool.submit(measure_generation, weights, mode, bundle, args.repeats).result()))
    first = rows[0][1]
    print(f"{first['frames']} frames, {first['size'][0]}x{first['size'][1]}, {first['steps']} steps, "
          f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cores; peak = process peak RSS, "
          f"added = over the same process before the model was loaded")
    print(f"{'variant':<44} {'s/shot':>8} {'vs first':>9} {'peak MiB':>9} {'added MiB':>10}")
    for name, row in rows:
        added = row["peak_rss"] - row["rss_before_model"]
        print(f"{name:<44} {row['seconds']:>8.2f} {row['seconds'] / first['seconds']:>8.2f}x "
              f"{row['peak_rss'] / 2**20:>9.0f} {added / 2**20:>10.0f}")
    return 0


def _add_generate(benchmarks) -> None:
    parser = benchmarks.add_parser("generate", help="seconds per generated shot at default settings")
    parser.add_argument("--bundle", required=True, help="a shot bundle (folder, zip or dataset shot folder)")
    parser.add_argument("--weights", help="model folder (default: the shipped previs-tiny)")
    parser.add_argument("--quantized", nargs="*", help="quantized model folders to time as well")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant; the best is shown")
    parser.set_defaults(func=_run_generate)


def _print_and_write(table: str, results, out: str | None, stem: str) -> None:
    """Print a benchmark's table; with ``out``, also write it (``STEM.md``) and its figures (``STEM.json``) there."""
    print(table)
    if out:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{stem}.md").write_text(table)
        (folder / f"{stem}.json").write_text(json.dumps(results, indent=2, default=float))
        print(f"wrote {folder / f'{stem}.md'} and {folder / f'{stem}.json'}")


def _run_vq(args) -> int:
    from backend.quant.benchmark import format_table, run_vq_benchmark

    results = run_vq_benchmark(
        weights=Path(args.weights) if args.weights else None, bundles=_bundle_paths(args.bundles)[: args.shots],
        bits=args.bits, methods=args.methods, iterations=args.iterations, samples=args.samples,
        progress=lambda message: print(f"bench vq: {message}", file=sys.stderr, flush=True),
    )
    _print_and_write(format_table(results), results, args.out, "bench_vq")
    return 0


def _add_vq(benchmarks) -> None:
    from backend.commands.quantize import METHOD_CHOICES as METHODS  # importing backend.quant would import torch

    parser = benchmarks.add_parser("vq", help="VQ4DiT against the baselines on the same model, in one run")
    parser.add_argument("--bundles", required=True, help="held-out shots (folder of bundles or dataset split)")
    parser.add_argument("--shots", type=int, default=4, help="how many of them to generate (default: 4)")
    parser.add_argument("--weights", help="full-precision model folder (default: the shipped previs-tiny)")
    parser.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4], choices=(2, 3, 4))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--iterations", type=int, default=None, help="calibration steps per block (default: VQConfig)")
    parser.add_argument("--samples", type=int, default=None, help="calibration forwards (default: VQConfig)")
    parser.add_argument("--out", help="also write bench_vq.md and bench_vq.json here")
    parser.set_defaults(func=_run_vq)


def _run_vq_blocks(args) -> int:
    from backend.commands.quantize import WeightsError
    from backend.quant.benchmark import format_block_table, run_block_benchmark

    try:
        rows = run_block_benchmark(Path(args.weights), args.bits, args.methods, args.iterations, args.samples,
                                   progress=lambda message: print(f"bench vq-blocks: {message}", file=sys.stderr,
                                                                  flush=True))
    except WeightsError as error:
        print(f"bench vq-blocks: {error}", file=sys.stderr)
        return 2
    _print_and_write(format_block_table(Path(args.weights).name, rows), rows, args.out, "bench_vq_blocks")
    return 0


def _add_vq_blocks(benchmarks) -> None:
    parser = benchmarks.add_parser(
        "vq-blocks", help="VQ4DiT against k-means and codebook-only on any diffusers transformer's block outputs",
        description="Quantize a model folder (ours, DiT, Wan VACE, ...) with each method at each bit width, on "
                    "zero-data inputs from its own config, and print the block-output errors side by side.")
    parser.add_argument("--weights", required=True, help="model or pipeline folder")
    parser.add_argument("--bits", type=int, nargs="+", default=[3, 2], choices=(2, 3, 4))
    parser.add_argument("--methods", nargs="+", default=["vq4dit", "codebook", "kmeans"],
                        choices=("vq4dit", "codebook", "kmeans", "rtn", "rtn-group"))
    parser.add_argument("--iterations", type=int, default=300, help="calibration steps per block (default: 300)")
    parser.add_argument("--samples", type=int, default=8, help="calibration forwards (default: 8)")
    parser.add_argument("--out", help="also write bench_vq_blocks.md and .json here")
    parser.set_defaults(func=_run_vq_blocks)


def _run_wan(args) -> int:
    import torch

    from backend.quant.wan_benchmark import format_wan_table, run

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"bench wan: --device {device}: this torch build has no usable CUDA device", file=sys.stderr)
        return 2
    on_gpu = device != "cpu"
    frames = args.frames or (81 if on_gpu else 5)
    height, width = args.height or (480 if on_gpu else 240), args.width or (832 if on_gpu else 416)
    if (frames - 1) % 4 or height % 16 or width % 16:
        print("bench wan: frames must be 4k+1 and height and width multiples of 16", file=sys.stderr)
        return 2
    variants = [None if v == "full" else int(v) for v in args.variants]
    result = run(args.shape, device, frames, height, width, variants, args.iterations or (100 if on_gpu else 4),
                 progress=lambda message: print(f"bench wan: {message}", file=sys.stderr, flush=True))
    _print_and_write(format_wan_table(result), result, args.out, f"bench_wan_{args.shape}")
    return 0


def _add_wan(benchmarks) -> None:
    parser = benchmarks.add_parser(
        "wan", help="Wan 2.1 VACE at its real shapes: memory and seconds per step, full precision and VQ4DiT",
        description="Build the Wan 2.1 VACE transformer at the 1.3B or 14B shape with random weights (no download) "
                    "and measure parameter bytes, peak memory and seconds per denoising step for full precision "
                    "and packed VQ4DiT layers (3 and 2 bits, dequantized per call), and the seconds VQ4DiT needs "
                    "a block, calibrated one at a time as `cinepregen quantize --device` does, with the device's "
                    "peak memory. On a GPU: 480x832, 81 frames by default; on a CPU: 240x416, 5 frames.")
    parser.add_argument("--shape", choices=("1.3B", "14B"), default="1.3B")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when there is one)")
    parser.add_argument("--frames", type=int, help="frames (4k+1)")
    parser.add_argument("--height", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--variants", nargs="+", default=["full", "3", "2"], choices=("full", "3", "2"))
    parser.add_argument("--iterations", type=int, help="calibration steps for the one-block timing")
    parser.add_argument("--out", help="also write bench_wan_SHAPE.md and .json here")
    parser.set_defaults(func=_run_wan)


def _run_vq_scale(args) -> int:
    from backend.quant.benchmark import scale_run

    result = scale_run(args.bits, args.iterations, args.samples)
    block, config = result["per_block"], result["config"]
    print(f"one random block of DiT-XL/2 width ({result['block_linear_weights'] / 1e6:.1f} M linear weights), "
          f"{result['bits']}-bit VQ4DiT (d={config['d']}, k={config['k']}, n={config['n']}), "
          f"{config['iterations']} calibration steps x {config['calibration_samples']} samples of batch "
          f"{config['batch_size']} x {config['frames']} frames, {result['threads']} threads")
    print(f"calibration inputs {block['capture_s']:.1f} s, k-means initialisation {block['kmeans_init_s']:.1f} s, "
          f"calibration {block['calibration_s']:.1f} s, block total {block['total_s']:.1f} s")
    print(f"stored {result['bits_per_weight']:.3f} bits/weight (codebooks included): "
          f"1/{result['fp16_size_ratio']:.1f} of the block's fp16 size")
    print(f"extrapolated to DiT-XL/2's {result['blocks']} blocks: {result['extrapolated_s'] / 60:.1f} min "
          f"on this CPU (paper: 20 min to 5 h on one A100 for DiT-XL/2)")
    return 0


def _add_vq_scale(benchmarks) -> None:
    parser = benchmarks.add_parser("vq-scale", help="VQ4DiT time per block at DiT-XL/2 width, extrapolated")
    parser.add_argument("--bits", type=int, default=2, choices=(2, 3, 4))
    parser.add_argument("--iterations", type=int, default=None, help="calibration steps per block (default: VQConfig)")
    parser.add_argument("--samples", type=int, default=None, help="calibration forwards (default: VQConfig)")
    parser.set_defaults(func=_run_vq_scale)


def _run_service(args) -> int:
    """The service against a direct ``generate_shot`` of the same bundle, in one run: the service's overhead (upload,
    queue, extraction, thumbnails, result files, polling as the add-on does) and, on a second job with more
    denoising steps so that it lasts, the status requests per second it answers on loopback while denoising."""
    import tempfile

    from backend.pipelines.generate import generate_shot
    from backend.server import measure_status_rps
    from backend.server.app import Settings, create_app
    from backend.server.process import serve_in_thread
    from cinepregen_addon.core.backend_client import BackendClient
    from cinepregen_addon.core.shot_bundle import zip_bundle

    bundle = _bundle_paths(args.bundle)[0]
    weights = Path(args.weights) if args.weights else None
    with tempfile.TemporaryDirectory(prefix="cinepregen-bench-service-") as tmp:
        generate_shot(bundle, Path(tmp) / "warm-up", weights=weights)  # load caches, as a running server has
        start = time.perf_counter()
        generate_shot(bundle, Path(tmp) / "direct", weights=weights)
        direct = time.perf_counter() - start
        archive = zip_bundle(bundle, Path(tmp) / "bundle.zip")
        with serve_in_thread(create_app(Settings(data_dir=Path(tmp) / "server", weights=weights))) as url:
            client = BackendClient(url)
            start = time.perf_counter()
            job = client.wait(client.submit(archive), timeout=600, poll_interval=0.1)
            client.download(job["id"], Path(tmp) / "downloaded")
            served = time.perf_counter() - start
            if job["status"] != "done":
                print(f"the job ended {job['status']}: {job.get('error')}")
                return 1
            long_job = client.submit(archive, {"steps": args.long_steps})
            while (job := client.status(long_job))["stage"] != "denoise" and job["status"] in ("queued", "running"):
                time.sleep(0.02)
            rps = measure_status_rps(url, long_job, args.poll_seconds) if job["stage"] == "denoise" else None
            still_denoising = client.status(long_job)["stage"] == "denoise"
            client.wait(long_job, timeout=600, poll_interval=0.5)
    print(f"direct generate_shot {direct:.2f} s; through the service (submit to downloaded, polled every 0.1 s) "
          f"{served:.2f} s; overhead {served - direct:+.2f} s ({served / direct:.2f}x)")
    if rps is None or not still_denoising:
        print(f"status endpoint: the {args.long_steps}-step job left its denoising stage before the polling ended; "
              "no figure (raise --long-steps or lower --poll-seconds)")
    else:
        print(f"status endpoint while a {args.long_steps}-step job denoises: {rps:.0f} requests/s on loopback over "
              f"{args.poll_seconds:g} s (one client, back to back)")
    return 0


def _add_service(benchmarks) -> None:
    parser = benchmarks.add_parser("service", help="service overhead over a direct generate, status requests/s")
    parser.add_argument("--bundle", required=True, help="a shot bundle (folder, zip or dataset shot folder)")
    parser.add_argument("--weights", help="model folder (default: the shipped previs-tiny)")
    parser.add_argument("--poll-seconds", type=float, default=2.0, help="how long to poll the status endpoint")
    parser.add_argument("--long-steps", type=int, default=40,
                        help="denoising steps of the job polled for requests/s (default: 40)")
    parser.set_defaults(func=_run_service)


def _run_ray(args) -> int:
    from backend.distributed.benchmark import run_board_benchmark

    bundles = _bundle_paths(args.bundles)
    result = run_board_benchmark(bundles, [int(n) for n in args.workers.split(",")],
                                 Path(args.weights) if args.weights else None, args.steps)
    print(f"{len(bundles)} shots, {args.steps or 'default'} steps, this machine: {result['cpus']} CPUs")
    print(f"in process, one after another: {result['in_process_s']:.1f} s")
    for row in result["ray"]:
        print(f"ray local, {row['workers']} worker(s): {row['seconds']:.1f} s "
              f"({result['in_process_s'] / row['seconds']:.2f}x the in-process speed; workers started and loaded "
              f"in {row['ready_s']:.1f} s)")
    first, last = result["ray"][0], result["ray"][-1]
    if last is not first:
        print(f"{last['workers']} workers over {first['workers']}: {first['seconds'] / last['seconds']:.2f}x")
    return 0


def _add_ray(benchmarks) -> None:
    parser = benchmarks.add_parser("ray", help="a board's wall time in process and on 1..N local Ray workers")
    parser.add_argument("--bundles", required=True, help="a folder of shot bundles (or dataset shot folders)")
    parser.add_argument("--workers", default="1,2", help="worker counts to measure (default: 1,2)")
    parser.add_argument("--weights", help="model folder (default: the shipped previs-tiny)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    parser.set_defaults(func=_run_ray)


BENCHMARKS = [_add_passes, _add_generate, _add_vq, _add_vq_blocks, _add_vq_scale, _add_wan, _add_service, _add_ray]


def add_parser(subparsers):
    parser = subparsers.add_parser("bench", help="measure throughput on this machine")
    benchmarks = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for add in BENCHMARKS:
        add(benchmarks)
