"""Quantized model folders: packed codes, fp16 codebooks and the full-precision leftovers (fp16 where exact) in one
safetensors file, `quantization_config.json` describing every quantized layer, and the model's own `config.json`
(diffusers' `save_config`) so the skeleton can be rebuilt before the weights are loaded.

Sizes are what a user downloads: `size_on_disk` counts every file of the folder, and bits per weight count the
codebooks (or scales and offsets) as well as the codes. A codebook shared by several layers is stored once, under
the first of them; the others name that layer in their `codebook` entry, and a layer with fp16 row scales says so in
`row_scale` (format version 2).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from backend.quant.baselines import UniformLinear
from backend.quant.capture import replace_module
from backend.quant.vq4dit import QuantizedModelInfo
from backend.quant.vq_linear import PackedLinear, VQLinear, tie_codebooks

CONFIG_NAME = "quantization_config.json"
WEIGHTS_NAME = "quantized_model.safetensors"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: one codebook a layer


def is_quantized_folder(folder: str | Path) -> bool:
    return (Path(folder) / CONFIG_NAME).is_file()


def size_on_disk(folder: str | Path) -> int:
    """Bytes of every file in the folder (weights, configs)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def _layer_entry(module: nn.Module, codebook_owner: str | None) -> dict:
    entry = {"in_features": module.in_features, "out_features": module.out_features, "bias": module.bias is not None}
    if isinstance(module, VQLinear):
        vq = {"kind": "vq", "d": module.d, "k": module.k, "row_scale": module.row_scale is not None}
        return {**vq, **({"codebook": codebook_owner} if codebook_owner else {}), **entry}
    return {"kind": "uniform", "bits": module.bits, "group_size": module.group_size, **entry}


def codebook_owners(model: nn.Module) -> dict[str, str]:
    """For each VQ layer whose codebook equals an earlier layer's (a shared one), the name of that earlier layer."""
    owners, stored = {}, []
    for name, module in model.named_modules():
        if isinstance(module, VQLinear):
            owner = next((other for other, codebook in stored if codebook.shape == module.codebook.shape
                          and torch.equal(codebook, module.codebook)), None)
            if owner:
                owners[name] = owner
            else:
                stored.append((name, module.codebook))
    return owners


def stored_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a quantized folder stores: fp32 ones in fp16 wherever that is exact (``round_leftovers``), and a
    shared codebook once (`codebook_owners`)."""
    state = {}
    shared = {f"{name}.codebook" for name in codebook_owners(model)}
    for key, tensor in model.state_dict().items():
        if key in shared:
            continue
        tensor = tensor.detach().contiguous()
        if tensor.dtype == torch.float32 and torch.equal(tensor.half().float(), tensor):
            tensor = tensor.half()
        state[key] = tensor.clone()
    return state


def storage_summary(model: nn.Module, state: dict[str, torch.Tensor]) -> dict:
    """Stored bits of the quantized weights (codebooks included) and of the whole model per dense parameter;
    ``state`` is the model's ``stored_state``."""
    quantized = {name: m for name, m in model.named_modules() if isinstance(m, PackedLinear)}
    packed = {f"{name}.{key}" for name, m in quantized.items() for key in m.state_dict() if key != "bias"}
    quantized_weights = sum(m.in_features * m.out_features for m in quantized.values())
    quantized_bits = sum(state[key].numel() * state[key].element_size() * 8 for key in packed if key in state)
    stored_bytes = sum(t.numel() * t.element_size() for t in state.values())
    dense_parameters = quantized_weights + sum(t.numel() for key, t in state.items() if key not in packed)
    return {
        "quantized_layers": len(quantized),
        "quantized_weights": quantized_weights,
        "bits_per_weight": quantized_bits / max(quantized_weights, 1),
        "stored_bytes": stored_bytes,
        "dense_parameters": dense_parameters,
        "bits_per_parameter": stored_bytes * 8 / max(dense_parameters, 1),
    }


def save_quantized(model: nn.Module, folder: str | Path, info: QuantizedModelInfo | None = None) -> Path:
    """Write a quantized model folder; `info` (from `quantize_model`) adds the run's measurements to the config."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    owners = codebook_owners(model)
    layers = {name: _layer_entry(m, owners.get(name)) for name, m in model.named_modules()
              if isinstance(m, PackedLinear)}
    if not layers:
        raise ValueError("model has no VQLinear or UniformLinear layers; run quantize_model first")
    if hasattr(model, "save_config"):
        model.save_config(folder)
    state = stored_state(model)
    save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "cinepregen-quantized"})
    cls = type(model)
    config = {
        "format_version": FORMAT_VERSION,
        "model_class": f"{cls.__module__}:{cls.__qualname__}",
        "method": info.method if info else None,
        "bits": info.bits if info else None,
        "d": info.config["d"] if info else None,
        "k": info.config["k"] if info else None,
        "layers": layers,
        **storage_summary(model, state),
        "run": {key: v for key, v in info.to_dict().items() if key != "layers"} if info else None,
    }
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def _import_class(path: str) -> type:
    module_name, _, qualname = path.partition(":")
    return getattr(importlib.import_module(module_name), qualname)


def load_quantized(model_class_or_base_model: type | nn.Module | None, folder: str | Path,
                   mode: str = "cached") -> nn.Module:
    """Rebuild a quantized model: build (or take) the full-precision skeleton, swap in the quantized layers
    named in `quantization_config.json`, then load the packed weights strictly (every key must match).

    Pass the model class (built from the folder's `config.json`), a model instance to convert in place, or None
    to use the class recorded at save time. A class is built without allocating its parameters (accelerate's empty
    weights), so loading needs the packed size in memory, not the full-precision model's.
    """
    folder = Path(folder)
    if not is_quantized_folder(folder):
        raise FileNotFoundError(f"{folder} is not a quantized model folder (no {CONFIG_NAME})")
    config = json.loads((folder / CONFIG_NAME).read_text())
    if config.get("format_version") not in READABLE_VERSIONS:
        raise ValueError(f"unsupported quantized format version {config.get('format_version')} in {folder}")
    if isinstance(model_class_or_base_model, nn.Module):
        model = model_class_or_base_model
    else:  # the skeleton's parameters are never allocated: only the packed layers and the kept weights are
        from accelerate import init_empty_weights

        cls = model_class_or_base_model or _import_class(config["model_class"])
        with init_empty_weights(include_buffers=False):  # buffers (rotary tables, ...) are made as usual
            model = cls.from_config(cls.load_config(folder))
    for name, entry in config["layers"].items():
        shape = (entry["in_features"], entry["out_features"])
        if entry["kind"] == "vq":
            layer = VQLinear(*shape, entry["d"], entry["k"], bias=entry["bias"], mode=mode,
                             row_scale=entry.get("row_scale", False))
        else:
            layer = UniformLinear(*shape, entry["bits"], entry["group_size"], bias=entry["bias"], mode=mode)
        replace_module(model, name, layer)
    state = load_file(str(folder / WEIGHTS_NAME))
    sharing: dict[str, list[str]] = {}
    for name, entry in config["layers"].items():
        if entry.get("codebook"):
            state[f"{name}.codebook"] = state[f"{entry['codebook']}.codebook"]
            sharing.setdefault(entry["codebook"], [entry["codebook"]]).append(name)
    for names in sharing.values():
        tie_codebooks([model.get_submodule(name) for name in names])
    targets = model.state_dict(keep_vars=True)
    for key, value in state.items():  # kept weights are stored rounded to bf16/fp16; compute in the model's dtype
        target = targets.get(key)
        if target is not None and value.is_floating_point() and target.dtype != value.dtype:
            state[key] = value.to(target.dtype)
    model.load_state_dict(state, strict=True, assign=True)
    still_empty = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if still_empty:
        raise ValueError(f"{folder}: the stored weights leave {still_empty[:3]} unset")
    return model.eval()
