"""VQ4DiT post-training vector quantization (Deng et al., arXiv 2408.17131), plus the harness that also runs
the baselines (k-means VQ, codebook-only VQ, round-to-nearest) on the same model with the same measurements.

Each weight (out, in) is cut into sub-vectors of d consecutive input weights and clustered into a codebook of k
codewords (k-means++ then Lloyd; one codebook a layer, or one for a block's layers of the same shape with
`share_codebooks`). VQ4DiT keeps for every sub-vector a candidate set of its n nearest codewords
and reconstructs it as a softmax-weighted average of them. Codebooks and softmax ratios are calibrated block by
block with no data: the full-precision model runs on noisy random frames with random conditions at sampled
timesteps (`make_calibration_inputs`) gives each block's inputs and full-precision outputs (``backend.quant.capture``:
made one block at a time from the first block's inputs when the blocks form a chain, else recorded by forward
hooks), and each block's
quantized output (on the inputs the quantized blocks before it pass on) is pulled towards the full-precision one
while `L_r = mean(1 - |2r - 1|)` pushes each ratio vector to one-hot. A sub-vector whose top ratio passes 0.99
is frozen to that candidate; at the end every sub-vector takes its highest-ratio candidate, which is ordinary VQ
storage (`VQLinear`).

Where each part lives: the hyperparameters in ``backend.quant.vq_config``, a block's inputs in
``backend.quant.capture``, the soft layers and a block's calibration loop in ``backend.quant.soft_vq``; this module
picks the layers and runs the blocks in order (`quantize_model`).
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from backend.quant.baselines import UniformLinear
from backend.quant.capture import (
    BlockSample,
    block_inputs,
    block_output_error,
    capture_block_samples,
    find_blocks,
    relative_mse,
    replace_module,
)
from backend.quant.offload import BlockOffload, to_device
from backend.quant.soft_vq import SoftVQLinear, calibrate_block, hard_vq_layers, soft_vq_layers
from backend.quant.vq_config import VQConfig, bits_to_vq_config

logger = logging.getLogger(__name__)

METHODS = ("vq4dit", "kmeans", "codebook", "rtn", "rtn-group")


def select_linears(
    model: nn.Module, config: VQConfig, d: int, blocks: list[nn.Module]
) -> tuple[dict[str, nn.Linear], dict[str, str]]:
    """Linear layers to quantize (by full name) and the skipped ones with the reason each stays in full precision."""
    in_blocks = {id(m) for block in blocks for m in block.modules()}
    chosen, skipped = {}, {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if config.blocks_only and id(module) not in in_blocks:
            skipped[name] = "outside the transformer blocks"
        elif any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(name.rsplit(".", 1)[-1], p) for p in config.skip_patterns):
            skipped[name] = "skip pattern"
        elif module.weight.numel() < config.min_weights:
            skipped[name] = f"tiny ({module.weight.numel()} < {config.min_weights} weights)"
        elif module.in_features % d:
            skipped[name] = f"in_features {module.in_features} not a multiple of {d}"
        else:
            chosen[name] = module
    return chosen, skipped



# ---------------------------------------------------------------------------------------------------------------
# The harness: one entry point for VQ4DiT and every baseline
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class QuantizedModelInfo:
    """What a quantization run did and measured; `to_dict()` is what benchmarks and configs store."""

    method: str
    bits: int
    config: dict
    layers: dict[str, dict] = field(default_factory=dict)  # name -> kind, shape, storage_bits, weight_mse, ...
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why it stays in full precision
    # index, kmeans_error (VQ), error: relative block-output MSE on full-precision inputs, path_error: the same with
    # every block quantized (`quantized_path_errors`), kmeans_seconds and calibration_seconds (VQ)
    blocks: list[dict] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the whole run (capture, k-means, calibration)
    capture_seconds: float = 0.0  # of which: running the full-precision model for the calibration inputs

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per quantized weight, codebooks (or scales and offsets) included."""
        weights = sum(layer["weights"] for layer in self.layers.values())
        return sum(layer["storage_bits"] for layer in self.layers.values()) / max(weights, 1)

    @property
    def weight_mse(self) -> float:
        weights = sum(layer["weights"] for layer in self.layers.values())
        return sum(layer["weight_mse"] * layer["weights"] for layer in self.layers.values()) / max(weights, 1)

    @property
    def mean_block_error(self) -> float | None:
        errors = [b["error"] for b in self.blocks if b.get("error") is not None]
        return sum(errors) / len(errors) if errors else None

    @property
    def path_error(self) -> float | None:
        """The last block's output error with every block quantized (`quantized_path_errors`)."""
        return self.blocks[-1].get("path_error") if self.blocks else None

    def to_dict(self) -> dict:
        return {**asdict(self), "bits_per_weight": self.bits_per_weight, "weight_mse": self.weight_mse,
                "mean_block_error": self.mean_block_error, "path_error": self.path_error}


def _layer_stats(kind: str, original: torch.Tensor, layer: nn.Module) -> dict:
    weight = original.detach().float()
    return {"kind": kind, "shape": list(weight.shape), "weights": weight.numel(), "storage_bits": layer.storage_bits(),
            "bits_per_weight": layer.storage_bits() / weight.numel(),
            "weight_mse": F.mse_loss(layer.dequantize(), weight).item()}


@torch.no_grad()
def _evaluate_with_hard_start(block: nn.Module, soft: dict[str, SoftVQLinear], samples: list[BlockSample]) -> float:
    """Block error with every sub-vector at its nearest codeword: the k-means starting point."""
    saved = {name: layer.frozen.clone() for name, layer in soft.items()}
    for layer in soft.values():
        layer.frozen.fill_(True)
    error = block_output_error(block, samples)
    for name, layer in soft.items():
        layer.frozen.copy_(saved[name])
    return error


def quantize_model(
    model: nn.Module,
    method: str,
    bits: int,
    config: VQConfig | None = None,
    blocks: list[nn.Module] | None = None,
    make_calibration_inputs: Callable[[], dict] | None = None,
    mode: str = "cached",
    progress: Callable[[int, int], None] | None = None,
    device: str | torch.device | None = None,
) -> QuantizedModelInfo:
    """Replace the model's nn.Linear layers in place by VQLinear ("vq4dit", "kmeans", "codebook") or
    UniformLinear ("rtn" per output channel, "rtn-group"), calibrating block by block where the method does.

    `make_calibration_inputs()` returns keyword arguments for one full-precision forward (noise, a sampled
    timestep, random conditions); it is required by the calibrated methods and, when given, every method reports
    its held-out block-output errors (on full-precision inputs, and with every block quantized). `progress(done,
    total)` is called after each block (and once for the layers outside the blocks, when any are quantized).

    With `device`, the blocks stay where they are, in their dtype, and each comes onto `device` in float32 only
    while it runs or is calibrated (`backend.quant.offload`): a model far larger than the device calibrates there
    (the inputs made by `make_calibration_inputs` are moved to it). The quantized model ends on the blocks' device.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    is_vq = method in ("vq4dit", "kmeans", "codebook")
    config = config or bits_to_vq_config(bits)
    if is_vq and round(config.code_bits) != bits:
        raise ValueError(f"config has d={config.d}, k={config.k} ({config.code_bits:g} bits), not {bits} bits")
    if method in ("vq4dit", "codebook") and make_calibration_inputs is None:
        raise ValueError(f"method {method!r} calibrates on model outputs: pass make_calibration_inputs")
    start = time.perf_counter()
    model.eval().requires_grad_(False)
    blocks = blocks if blocks is not None else find_blocks(model)
    unit = config.d if is_vq else config.group_size if method == "rtn-group" else 1
    linears, skipped = select_linears(model, config, unit, blocks)
    info = QuantizedModelInfo(method, bits, asdict(config), skipped=skipped)

    offload = None
    if device is not None:
        storage = next((t.device for b in blocks for t in [*b.parameters(), *b.buffers()]), torch.device("cpu"))
        offload = BlockOffload(model, blocks, device, storage)
        if make_calibration_inputs is not None:
            make_calibration_inputs = _on_device(make_calibration_inputs, offload.device)

    inputs, held_out = None, [[] for _ in blocks]
    if make_calibration_inputs is not None:
        inputs = block_inputs(model, blocks, make_calibration_inputs, config,
                              config.sequential_inputs and method in ("vq4dit", "codebook"))
        info.capture_seconds = time.perf_counter() - start

    block_of = {id(m): i for i, block in enumerate(blocks) for m in block.modules()}
    by_block: dict[int | None, dict[str, nn.Linear]] = {}
    for name, linear in linears.items():
        by_block.setdefault(block_of.get(id(linear)), {})[name] = linear
    del linears  # a block's original layers go once it is quantized (offloaded, they sit on the device till then)

    order = ([None] if None in by_block else []) + list(range(len(blocks)))  # every block moves the inputs on
    for done, index in enumerate(order, start=1):
        group, record, calibration = by_block.pop(index, {}), {"index": index}, []
        on_device = (offload.on_device(blocks[index]) if offload is not None and index is not None
                     else contextlib.nullcontext())
        with on_device:
            if index is not None and inputs is not None:
                calibration, held_out[index] = inputs.block_samples(index, blocks[index])
            if is_vq and group:
                phase = time.perf_counter()
                soft = soft_vq_layers(group, config, config.n if method == "vq4dit" else 1)
                record["kmeans_seconds"] = time.perf_counter() - phase  # k-means and candidate sets
                for name, layer in soft.items():
                    replace_module(model, name, layer)
                if index is not None and held_out[index]:
                    record["kmeans_error"] = _evaluate_with_hard_start(blocks[index], soft, held_out[index])
                if index is not None and method in ("vq4dit", "codebook"):
                    phase = time.perf_counter()
                    with torch.enable_grad():
                        calibrate_block(blocks[index], soft, calibration, config, method == "vq4dit")
                    record["calibration_seconds"] = time.perf_counter() - phase
                for name, quantized in hard_vq_layers(soft).items():
                    quantized.set_mode(mode)
                    replace_module(model, name, quantized)
                    info.layers[name] = _layer_stats("vq", group[name].weight, quantized)
            elif not is_vq:
                for name, linear in group.items():
                    quantized = UniformLinear.from_linear(linear, bits, unit if method == "rtn-group" else None, mode)
                    replace_module(model, name, quantized)
                    info.layers[name] = _layer_stats("uniform", linear.weight, quantized)
            if index is not None and inputs is not None:
                inputs.advance(blocks[index])
            if index is not None and group:
                record["error"] = block_output_error(blocks[index], held_out[index]) if held_out[index] else None
                info.blocks.append(record)
                logger.info("%s %d-bit block %d: %s", method, bits, index, record)
        del group
        if progress:
            progress(done, len(order))
    if offload is not None:
        offload.upcast_leftovers()  # norms, biases, skipped layers: rounded and stored as in a whole-model run
    round_leftovers(model, getattr(torch, config.leftover_dtype))
    if inputs is not None:
        errors = quantized_path_errors(model, blocks, make_calibration_inputs, held_out, inputs.held_out_rng)
        for record in info.blocks:
            record["path_error"] = errors[record["index"]]
    if offload is not None:
        offload.close()
        model.to(offload.storage)
    info.seconds = time.perf_counter() - start
    return info


def _on_device(make_calibration_inputs: Callable[[], dict], device: torch.device) -> Callable[[], dict]:
    return lambda: to_device(make_calibration_inputs(), device)


@torch.no_grad()
def quantized_path_errors(model: nn.Module, blocks: list[nn.Module], make_calibration_inputs: Callable[[], dict],
                          held_out: list[list[BlockSample]], rng_state: torch.Tensor) -> list[float]:
    """Each block's relative output MSE with the whole model quantized: the held-out calls run again (same random
    state) through the quantized model, each block's output against the full-precision one. The last block's is
    the error the quantized transformer hands to the output layer; it is what sequential calibration minimises."""
    with torch.random.fork_rng():
        torch.set_rng_state(rng_state)
        rerun = capture_block_samples(model, blocks, make_calibration_inputs, len(held_out[0]))
    return [sum(relative_mse(quantized[2], reference[2]).item() for quantized, reference in zip(q, r, strict=True))
            / len(r) for q, r in zip(rerun, held_out, strict=True)]


@torch.no_grad()
def round_leftovers(model: nn.Module, dtype: torch.dtype) -> None:
    """Round every fp32 tensor of the model's state to ``dtype`` precision in place (they stay fp32 tensors), so
    that storing them in ``dtype`` loses nothing and a saved model computes exactly what the quantized one did."""
    for tensor in model.state_dict().values():
        if tensor.dtype == torch.float32:
            tensor.copy_(tensor.to(dtype))
