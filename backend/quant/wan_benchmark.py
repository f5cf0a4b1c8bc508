"""``cinepregen bench wan``: what the Wan 2.1 VACE transformer costs at its real shapes, full precision and VQ4DiT.

No weights are needed: the transformer is built at the published 1.3B or 14B shape with random weights. Speed and
memory do not depend on the values, only on the shapes, so each VQ variant is the same skeleton with every block
linear replaced by a packed ``VQLinear`` (3 bits: d=2, k=64; 2 bits: d=4, k=256) in the serving mode, one layer
dequantized per call; what the quantization does to quality is ``bench vq-blocks``'s and ``bench vq``'s business.
Per variant: parameter bytes, peak memory of one denoising step (two forwards: classifier-free guidance) and its
seconds. Once: VQ4DiT on zero-data inputs for a VACE block and a main block of the real width, calibrated as
`cinepregen quantize --device` does (the model in bf16 in host memory, the block at work in float32 on the
device): seconds per block and the device's peak memory, which is what calibrating the whole model needs there.

On a GPU the defaults are Wan's own 480x832, 81 frames (it must finish within 10 minutes on one GPU); on a CPU
the 1.3B shape runs at a reduced size and frame count.
"""

from __future__ import annotations

import resource
import time

import torch
from torch import nn

from backend.quant.capture import find_blocks
from backend.quant.vq4dit import quantize_model, select_linears
from backend.quant.vq_config import bits_to_vq_config
from backend.quant.vq_linear import VQLinear

WAN_SHAPES = {  # the published transformer configurations (Wan-AI/Wan2.1-VACE-*-diffusers)
    "1.3B": dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30,
                 vace_layers=list(range(0, 30, 2))),
    "14B": dict(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40,
                vace_layers=list(range(0, 40, 5))),
}
COMMON = dict(patch_size=(1, 2, 2), in_channels=16, out_channels=16, text_dim=4096, freq_dim=256, cross_attn_norm=True,
              qk_norm="rms_norm_across_heads", vace_in_channels=96)
TEXT_TOKENS = 512


def build(shape: str, bits: int | None, device: str, dtype: torch.dtype, one_block: bool = False) -> nn.Module:
    """The transformer at ``shape`` on ``device``: random weights (``bits`` None) or packed VQ block linears; with
    ``one_block``, one VACE block and one main block of that width."""
    from accelerate import init_empty_weights
    from diffusers import WanVACETransformer3DModel

    layers = dict(num_layers=1, vace_layers=[0]) if one_block else {}
    with init_empty_weights(include_buffers=False):
        model = WanVACETransformer3DModel(**COMMON, **{**WAN_SHAPES[shape], **layers})
    if bits is not None:
        config = bits_to_vq_config(bits)
        chosen, _ = select_linears(model, config, config.d, find_blocks(model))
        for name, linear in chosen.items():
            parent, _, child = name.rpartition(".")
            layer = VQLinear(linear.in_features, linear.out_features, config.d, config.k, bias=linear.bias is not None,
                             mode="per_call")
            layer.codebook.normal_(0, 0.02)
            setattr(model.get_submodule(parent), child, layer)
    with torch.no_grad():  # only the skeleton's parameters are empty: made on the device, in the serving dtype
        for module in model.modules():
            for name, tensor in list(module.named_parameters(recurse=False)):
                if tensor.is_meta:
                    fresh = torch.empty(tensor.shape, device=device, dtype=dtype).normal_(0, 0.02)
                    setattr(module, name, nn.Parameter(fresh, requires_grad=False))
    return model.to(device).eval()


def parameter_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def _peak_memory(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the process's peak RSS


@torch.no_grad()
def time_step(model: nn.Module, frames: int, height: int, width: int, device: str, dtype: torch.dtype) -> float:
    """Seconds of one denoising step with guidance (two forwards), after one warm-up forward."""
    latent = (1 + (frames - 1) // 4, height // 8, width // 8)
    inputs = dict(hidden_states=torch.randn(1, 16, *latent, device=device, dtype=dtype),
                  control_hidden_states=torch.randn(1, 96, *latent, device=device, dtype=dtype),
                  encoder_hidden_states=torch.randn(1, TEXT_TOKENS, 4096, device=device, dtype=dtype),
                  timestep=torch.tensor([500], device=device), return_dict=False)
    model(**inputs)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(2):
        model(**inputs)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def calibration_seconds(shape: str, bits: int, iterations: int, device: str) -> dict:
    """Seconds a block takes VQ4DiT (k-means, candidate sets and calibration) and the device's peak memory, with
    the blocks waiting on the CPU in bf16 and each calibrated on ``device`` in float32."""
    from backend.quant.calibration_inputs import config_calibration_inputs

    model = build(shape, None, "cpu", torch.bfloat16, one_block=True)
    config = bits_to_vq_config(bits, iterations=iterations, calibration_samples=2, batch_size=1, eval_samples=1)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    info = quantize_model(model, "vq4dit", bits, config, device=device,
                          make_calibration_inputs=lambda: config_calibration_inputs(model, 1))
    seconds = time.perf_counter() - start
    blocks = len(WAN_SHAPES[shape]["vace_layers"]) + WAN_SHAPES[shape]["num_layers"]
    return {"block_seconds": seconds / len(info.blocks), "blocks": blocks, "iterations": iterations, "bits": bits,
            "kmeans_seconds": sum(b["kmeans_seconds"] for b in info.blocks) / len(info.blocks),
            "calibration_seconds": sum(b["calibration_seconds"] for b in info.blocks) / len(info.blocks),
            "peak_memory_bytes": _peak_memory(device)}


def run(shape: str, device: str, frames: int, height: int, width: int, variants: list, iterations: int,
        progress=lambda message: None) -> dict:
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    rows = []
    for bits in variants:
        label = "bf16" if bits is None and dtype == torch.bfloat16 else "fp32" if bits is None else f"VQ4DiT {bits}-bit"
        progress(f"{shape} {label}: building")
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        model = build(shape, bits, device, dtype)
        weights = parameter_bytes(model)
        progress(f"{shape} {label}: one step at {width}x{height}, {frames} frames")
        seconds = time_step(model, frames, height, width, device, dtype)
        rows.append({"variant": label, "parameter_bytes": weights, "peak_memory_bytes": _peak_memory(device),
                     "seconds_per_step": seconds})
        del model
    progress(f"{shape}: calibrating one block")
    calibration = calibration_seconds(shape, variants[-1] or 3, iterations, device)
    return {"shape": shape, "device": device, "frames": frames, "height": height, "width": width, "rows": rows,
            "calibration": calibration}


def format_wan_table(result: dict) -> str:
    note = ("peak memory: the process's peak RSS over the whole run so far (CPU)"
            if result["device"] == "cpu" else "peak memory: torch.cuda.max_memory_allocated during the variant")
    lines = [f"Wan 2.1 VACE {result['shape']} transformer on {result['device']}, one denoising step (2 forwards) at "
             f"{result['width']}x{result['height']}, {result['frames']} frames; {note}", "",
             "| variant | parameters | peak memory | s / step |", "|---|---|---|---|"]
    for row in result["rows"]:
        lines.append(f"| {row['variant']} | {row['parameter_bytes'] / 2**30:.2f} GiB | "
                     f"{row['peak_memory_bytes'] / 2**30:.2f} GiB | {row['seconds_per_step']:.2f} |")
    c = result["calibration"]
    lines += ["", f"VQ4DiT {c['bits']}-bit calibration, one block at a time on {result['device']} (the others in "
              f"bf16 on the CPU), {c['iterations']} iterations: {c['block_seconds']:.1f} s a block (k-means "
              f"{c['kmeans_seconds']:.1f} s, calibration {c['calibration_seconds']:.1f} s), about "
              f"{c['block_seconds'] * c['blocks'] / 60:.0f} min for the {c['blocks']} blocks; peak memory "
              f"{c['peak_memory_bytes'] / 2**30:.2f} GiB"]
    return "\n".join(lines) + "\n"
