"""``cinepregen bench vq``: VQ4DiT and its baselines on the same trained previs model, in one run.

For every bit width and method the full-precision transformer is loaded afresh, quantized (calibrated where the
method calibrates, on zero-data inputs), saved in the packed format and measured: bits per weight with codebooks
(or scales) included, size on disk, the relative block-output error on held-out calibration inputs, and what a
user sees — the clips it generates for held-out shots compared with the full-precision model's clips (same seeds)
and with the engine's target renders, and their warping error. Latency and peak memory of the shipped quantized
folders in both modes are ``bench generate --quantized``'s; their full evaluation (leakage, binding) is
``cinepregen eval --weights``'s.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np

from backend.quant.serialization import save_quantized, size_on_disk
from backend.quant.vq4dit import bits_to_vq_config, quantize_model


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def _generate_all(pipeline, bundles) -> tuple[list[np.ndarray], float]:
    start = time.perf_counter()
    clips = [pipeline(bundle, seed=0) for bundle in bundles]
    return clips, (time.perf_counter() - start) / len(bundles)


def run_vq_benchmark(weights: Path | None, bundles: list, bits: list[int], methods: list[str],
                     iterations: int | None = None, samples: int | None = None) -> dict:
    from backend.eval.evaluate import clip_metrics, load_target_frames
    from backend.models.previs_dit import PrevisDiT, make_calibration_inputs
    from backend.pipelines.previs_pipeline import DEFAULT_WEIGHTS, PrevisPipeline
    from cinepregen_addon.core.shot_bundle import read_bundle

    weights = Path(weights or DEFAULT_WEIGHTS)
    full = PrevisPipeline.from_pretrained(weights)
    shots = [read_bundle(path) for path in bundles]
    targets = [load_target_frames(path) for path in bundles]
    reference_clips, full_seconds = _generate_all(full, shots)

    def warping_error(clips):
        return float(np.mean([clip_metrics(c, b)["warping_error"] for c, b in zip(clips, shots, strict=True)]))

    def target_psnr(clips):
        scores = [_psnr(c, t) for c, t in zip(clips, targets, strict=True) if t is not None]
        return float(np.mean(scores)) if scores else None

    full_size = size_on_disk(weights / "transformer")
    rows = [{"method": "full precision", "bits": 32, "bits_per_weight": 32.0, "bytes": full_size,
             "weight_mse": 0.0, "block_error": 0.0, "psnr_vs_full": math.inf,
             "psnr_vs_target": target_psnr(reference_clips), "warping_error": warping_error(reference_clips),
             "seconds_per_shot": full_seconds, "quantize_seconds": 0.0}]
    overrides = {k: v for k, v in (("iterations", iterations), ("calibration_samples", samples)) if v is not None}
    with tempfile.TemporaryDirectory(prefix="cinepregen-bench-vq-") as tmp:
        for bit_width in bits:
            for method in methods:
                model = PrevisDiT.from_pretrained(weights / "transformer", low_cpu_mem_usage=False).eval()
                config = bits_to_vq_config(bit_width, **overrides)
                info = quantize_model(model, method, bit_width, config,
                                      make_calibration_inputs=lambda m=model, c=config:
                                      make_calibration_inputs(m, c.batch_size))
                folder = save_quantized(model, Path(tmp) / f"{method}-{bit_width}", info)
                pipeline = PrevisPipeline(model, full.reference_encoder, full.scheduler, full.sampling)
                clips, seconds = _generate_all(pipeline, shots)
                rows.append({
                    "method": method, "bits": bit_width, "bits_per_weight": info.bits_per_weight,
                    "bytes": size_on_disk(folder), "weight_mse": info.weight_mse, "block_error": info.mean_block_error,
                    "psnr_vs_full": float(np.mean([_psnr(c, r) for c, r in zip(clips, reference_clips, strict=True)])),
                    "psnr_vs_target": target_psnr(clips), "warping_error": warping_error(clips),
                    "seconds_per_shot": seconds,
                    "quantize_seconds": info.seconds,
                })
    return {"weights": str(weights), "shots": [str(path) for path in bundles], "overrides": overrides, "rows": rows}


def _cell(value, spec: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "exact"
    return format(value, spec)


def format_table(results: dict) -> str:
    """The benchmark as a markdown table; sizes and speeds also as ratios to full precision."""
    full = results["rows"][0]
    lines = [
        f"VQ benchmark on `{results['weights']}`, {len(results['shots'])} held-out shots, seed 0"
        + (f", overrides {results['overrides']}" if results["overrides"] else ""),
        "",
        "| method | bits | bits/weight (with codebooks) | transformer on disk | smaller | weight MSE | "
        "block error (rel. MSE) | PSNR vs full precision (dB) | PSNR vs target (dB) | warping error | s/shot | "
        "quantize s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['method']} | {row['bits']} | {row['bits_per_weight']:.2f} | {row['bytes'] / 2**20:.2f} MiB | "
            f"{full['bytes'] / row['bytes']:.1f}x | {row['weight_mse']:.2e} | {_cell(row['block_error'], '.4f')} | "
            f"{_cell(row['psnr_vs_full'], '.2f')} | {_cell(row['psnr_vs_target'], '.2f')} | "
            f"{row['warping_error']:.4f} | "
            f"{row['seconds_per_shot']:.2f} | {row['quantize_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


DIT_XL_2 = {"blocks": 28, "hidden_size": 1152, "num_heads": 16}


def scale_run(bits: int = 2, iterations: int | None = None, samples: int | None = None,
              shape: dict = DIT_XL_2) -> dict:
    """Time k-means initialisation and VQ4DiT calibration for one randomly initialised block of DiT-XL/2's width
    (hidden 1152, 16 heads, MLP x4; or another `shape`) and extrapolate to all its blocks. Weights are random, so
    the errors mean nothing; the time (and the codebooks' share of the stored bits) is what scales. Calibration time
    is a VQ4DiT run less a k-means-only run of the same block."""
    import torch

    from backend.models.previs_dit import PrevisDiT, make_calibration_inputs

    torch.manual_seed(0)
    model = PrevisDiT(hidden_size=shape["hidden_size"], num_heads=shape["num_heads"], depth=1).eval()
    block_weights = sum(m.weight.numel() for m in model.blocks[0].modules() if isinstance(m, torch.nn.Linear))
    overrides = {k: v for k, v in (("iterations", iterations), ("calibration_samples", samples)) if v is not None}
    config = bits_to_vq_config(bits, **overrides)
    timings = {}
    for method in ("kmeans", "vq4dit"):
        fresh = PrevisDiT.from_config(model.config)
        fresh.load_state_dict(model.state_dict())
        info = quantize_model(fresh, method, bits, config,
                              make_calibration_inputs=lambda m=fresh: make_calibration_inputs(m, config.batch_size))
        timings[method] = info.seconds
        stored_bits_per_weight = info.bits_per_weight
    per_block = {"kmeans_init_s": timings["kmeans"], "calibration_s": timings["vq4dit"] - timings["kmeans"],
                 "total_s": timings["vq4dit"]}
    return {"bits": bits, "config": {"iterations": config.iterations, "calibration_samples": config.calibration_samples,
                                     "batch_size": config.batch_size, "d": config.d, "k": config.k, "n": config.n},
            "block_linear_weights": block_weights, "per_block": per_block,
            "bits_per_weight": stored_bits_per_weight, "fp16_size_ratio": 16 / stored_bits_per_weight,
            "blocks": shape["blocks"], "extrapolated_s": per_block["total_s"] * shape["blocks"],
            "threads": torch.get_num_threads()}
