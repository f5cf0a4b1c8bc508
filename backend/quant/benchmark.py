"""``cinepregen bench vq``: VQ4DiT and its baselines on the same trained previs model, in one run.

For every bit width and method the full-precision transformer is loaded afresh, quantized (calibrated where the
method calibrates, on zero-data inputs), saved in the packed format and measured: bits per weight with codebooks
(or scales) included, size on disk, the relative block-output error on held-out calibration inputs (each block on
full-precision inputs, and the last block's with every block quantized), and what a user sees — the held-out shots
evaluated by the model issue's harness with the same seeds (warping error, PSNR against the engine's target renders,
leakage of a reference edit) and the clips compared with the full-precision model's. Latency and peak memory of the
shipped quantized folders in both modes are ``bench generate --quantized``'s, each variant in its own process.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from backend.eval.metrics import psnr
from backend.quant.serialization import save_quantized, size_on_disk
from backend.quant.vq4dit import quantize_model
from backend.quant.vq_config import bits_to_vq_config


def _timed(generate_fn) -> tuple:
    """The generate function, and the wall times of its plain calls (the model's clip, not the harness's baselines
    and reference edits)."""
    seconds: list[float] = []

    def timed(bundle, *, seed, references_override=None, independent_frames=False, masked=True):
        start = time.perf_counter()
        clip = generate_fn(bundle, seed=seed, references_override=references_override,
                           independent_frames=independent_frames, masked=masked)
        if references_override is None and not independent_frames and masked:
            seconds.append(time.perf_counter() - start)
        return clip

    return timed, seconds


def _evaluate(pipeline, bundles: list, progress: Callable[[str], None], label: str) -> dict:
    """The model issue's held-out figures for one variant: warping error, PSNR vs target, leakage (the
    evaluation harness, same seeds for every variant), plus its clips and seconds per shot."""
    from backend.eval.evaluate import evaluate_bundles
    from backend.pipelines.previs_pipeline import make_generate_fn

    generate_fn, seconds = _timed(make_generate_fn(pipeline=pipeline))
    evaluation = evaluate_bundles(bundles, generate_fn, seed=0,
                                  progress=lambda fraction, stage: progress(f"{label}: {stage} ({fraction:.0%})"))
    summary = {row["metric"]: None if math.isnan(row["model"]) else row["model"] for row in evaluation["summary"]}
    return {"clips": [result["clip"] for result in evaluation["bundles"]],
            "psnr_vs_target": summary["PSNR vs target (dB)"],
            "warping_error": summary["warping error (lower is better)"],
            "leakage": summary["leakage: outside/inside change ratio"], "seconds_per_shot": float(np.mean(seconds))}


def run_vq_benchmark(weights: Path | None, bundles: list, bits: list[int], methods: list[str],
                     iterations: int | None = None, samples: int | None = None,
                     progress: Callable[[str], None] | None = None) -> dict:
    from backend.models.previs_dit import PrevisDiT, make_calibration_inputs
    from backend.pipelines.previs_pipeline import DEFAULT_WEIGHTS, PrevisPipeline

    report = progress or (lambda message: None)
    weights = Path(weights or DEFAULT_WEIGHTS)
    full = PrevisPipeline.from_pretrained(weights)
    figures = _evaluate(full, bundles, report, "full precision")
    reference_clips = figures.pop("clips")
    rows = [{"method": "full precision", "bits": 32, "bits_per_weight": 32.0,
             "bytes": size_on_disk(weights / "transformer"), "weight_mse": 0.0, "block_error": 0.0,
             "path_error": 0.0, "quantize_seconds": 0.0, "psnr_vs_full": math.inf, **figures}]
    overrides = {k: v for k, v in (("iterations", iterations), ("calibration_samples", samples)) if v is not None}
    with tempfile.TemporaryDirectory(prefix="cinepregen-bench-vq-") as tmp:
        for bit_width in bits:
            for method in methods:
                label = f"{method} {bit_width}-bit"
                report(f"{label}: quantizing")
                model = PrevisDiT.from_pretrained(weights / "transformer", low_cpu_mem_usage=False).eval()
                config = bits_to_vq_config(bit_width, **overrides)
                info = quantize_model(model, method, bit_width, config,
                                      make_calibration_inputs=lambda m=model, c=config: make_calibration_inputs(
                                          m, c.batch_size, reference_encoder=full.reference_encoder))
                folder = save_quantized(model, Path(tmp) / f"{method}-{bit_width}", info)
                pipeline = PrevisPipeline(model, full.reference_encoder, full.scheduler, full.sampling)
                figures = _evaluate(pipeline, bundles, report, label)
                pairs = zip(figures.pop("clips"), reference_clips, strict=True)
                rows.append({
                    "method": method, "bits": bit_width, "bits_per_weight": info.bits_per_weight,
                    "bytes": size_on_disk(folder), "weight_mse": info.weight_mse, "block_error": info.mean_block_error,
                    "path_error": info.path_error, "quantize_seconds": info.seconds,
                    "psnr_vs_full": float(np.mean([psnr(clip, full_clip) for clip, full_clip in pairs])), **figures,
                })
                report(f"{label}: done in {info.seconds:.0f} s, block error {_cell(info.mean_block_error, '.4g')}, "
                       f"last block quantized path {_cell(info.path_error, '.4g')}")
    return {"weights": str(weights), "shots": [str(path) for path in bundles], "overrides": overrides, "rows": rows}


def _cell(value, spec: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "exact"
    return format(value, spec)


def format_table(results: dict) -> str:
    """The benchmark as a markdown table; sizes also as ratios to the fp16 size of the full-precision (fp32) file."""
    full = results["rows"][0]
    lines = [
        f"VQ benchmark on `{results['weights']}`, {len(results['shots'])} held-out shots, seed 0"
        + (f", overrides {results['overrides']}" if results["overrides"] else ""),
        "",
        "| method | bits | bits/weight (with codebooks) | transformer on disk | smaller than fp16 | weight MSE | "
        "block error (rel. MSE) | last block, all quantized | PSNR vs full precision (dB) | PSNR vs target (dB) | "
        "warping error | leakage | s/shot | quantize s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['method']} | {row['bits']} | {row['bits_per_weight']:.2f} | {row['bytes'] / 2**20:.2f} MiB | "
            f"{full['bytes'] / 2 / row['bytes']:.2f}x | {row['weight_mse']:.2e} | {_cell(row['block_error'], '.4f')} | "
            f"{_cell(row['path_error'], '.4f')} | {_cell(row['psnr_vs_full'], '.2f')} | "
            f"{_cell(row['psnr_vs_target'], '.2f')} | "
            f"{row['warping_error']:.4f} | {_cell(row['leakage'], '.3f')} | "
            f"{row['seconds_per_shot']:.2f} | {row['quantize_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


DIT_XL_2 = {"blocks": 28, "hidden_size": 1152, "num_heads": 16}


def scale_run(bits: int = 2, iterations: int | None = None, samples: int | None = None,
              shape: dict = DIT_XL_2, frames: int = 2) -> dict:
    """Time VQ4DiT on one randomly initialised block of DiT-XL/2's width (hidden 1152, 16 heads, MLP x4; or another
    `shape`), phase by phase, and extrapolate to all its blocks. Each calibration sample has `frames` frames of 144
    tokens (2: 288 tokens, close to DiT-XL/2's 256 at 256x256). Weights are random, so the errors mean nothing; the
    time (and the codebooks' share of the stored bits) is what scales."""
    import torch

    from backend.models.previs_dit import PrevisDiT, make_calibration_inputs

    torch.manual_seed(0)
    model = PrevisDiT(hidden_size=shape["hidden_size"], num_heads=shape["num_heads"], depth=1).eval()
    block_weights = sum(m.weight.numel() for m in model.blocks[0].modules() if isinstance(m, torch.nn.Linear))
    overrides = {k: v for k, v in (("iterations", iterations), ("calibration_samples", samples)) if v is not None}
    config = bits_to_vq_config(bits, **overrides)
    info = quantize_model(model, "vq4dit", bits, config,
                          make_calibration_inputs=lambda: make_calibration_inputs(model, config.batch_size, frames))
    block = info.blocks[0]
    per_block = {"capture_s": info.capture_seconds, "kmeans_init_s": block["kmeans_seconds"],
                 "calibration_s": block["calibration_seconds"], "total_s": info.seconds}
    return {"bits": bits, "config": {"iterations": config.iterations, "calibration_samples": config.calibration_samples,
                                     "batch_size": config.batch_size, "d": config.d, "k": config.k, "n": config.n,
                                     "frames": frames},
            "block_linear_weights": block_weights, "per_block": per_block,
            "bits_per_weight": info.bits_per_weight, "fp16_size_ratio": 16 / info.bits_per_weight,
            "blocks": shape["blocks"], "extrapolated_s": per_block["total_s"] * shape["blocks"],
            "threads": torch.get_num_threads()}


def run_block_benchmark(folder: Path, bits: list[int], methods: list[str], iterations: int | None = None,
                        samples: int | None = None, progress: Callable[[str], None] = lambda message: None) -> list:
    """Every method at every bit width on any diffusers transformer folder (a model or a pipeline's
    ``transformer/``), calibrated on the model's own zero-data inputs (``config_calibration_inputs``, or its
    module's ``make_calibration_inputs``): bits per weight, block-output error on full-precision inputs and the last
    block's with every block quantized, seconds. The model is loaded afresh for each run."""
    import sys

    from backend.commands.quantize import check_weights_folder, resolve_model_class
    from backend.quant.calibration_inputs import config_calibration_inputs

    folder = folder / "transformer" if (folder / "transformer" / "config.json").is_file() else folder
    cls = resolve_model_class(check_weights_folder(folder))
    maker = getattr(sys.modules[cls.__module__], "make_calibration_inputs", None) or config_calibration_inputs
    rows = []
    for width in bits:
        overrides = {k: v for k, v in (("iterations", iterations), ("calibration_samples", samples)) if v is not None}
        config = bits_to_vq_config(width, **overrides)
        for method in methods:
            model = cls.from_pretrained(folder, local_files_only=True).eval()
            progress(f"{method} {width}-bit")
            batch = config.batch_size
            info = quantize_model(model, method, width, config,
                                  make_calibration_inputs=lambda model=model, batch=batch: maker(model, batch))
            rows.append({"bits": width, "method": method, "bits_per_weight": info.bits_per_weight,
                         "block_error": info.mean_block_error, "path_error": info.path_error,
                         "seconds": info.seconds, "layers": len(info.layers)})
    return rows


def format_block_table(model: str, rows: list) -> str:
    lines = [f"Block-output errors of {model} (relative MSE on held-out zero-data inputs; path: every block "
             "quantized)", "", "| bits | method | bits/weight | block error | path error | seconds |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['bits']} | {row['method']} | {row['bits_per_weight']:.3f} | "
                     f"{_cell(row['block_error'], '.4g')} | {_cell(row['path_error'], '.4g')} | {row['seconds']:.1f} |")
    return "\n".join(lines) + "\n"
