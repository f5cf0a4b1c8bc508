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
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from backend.adapters.base import read_json
from backend.models.folder_check import check_config_integers, compare_tensors, safetensors_shapes
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


LAYER_FIELDS = {"vq": {"d": int, "k": int}, "uniform": {"bits": int, "group_size": int}}
MAX_CODEBOOK = 2**16


def check_layer_entries(config: dict, model: nn.Module, folder: Path) -> None:
    """Refuse a ``quantization_config.json`` whose layers are not linear layers of the model with the same sizes,
    or whose entries are malformed (before any packed layer is made: a wrong size would allocate it)."""
    path = folder / CONFIG_NAME
    layers = config.get("layers")
    if not isinstance(layers, dict) or not layers:
        raise ValueError(f"{path}: 'layers' must map layer names to their entries; the folder is damaged: "
                         "quantize the model again")
    stored_bits: set[float] = set()
    for name, entry in layers.items():
        kind = entry.get("kind") if isinstance(entry, dict) else None
        if kind not in LAYER_FIELDS:
            raise ValueError(f"{path}: layer {name[:80]!r} has no kind 'vq' or 'uniform'")
        fields = {"in_features": int, "out_features": int, "bias": bool, **LAYER_FIELDS[kind]}
        for field, kind_of in fields.items():
            if not isinstance(entry.get(field), kind_of) or (kind_of is int and isinstance(entry[field], bool)):
                raise ValueError(f"{path}: layer {name[:80]!r}: {field} must be {kind_of.__name__}, got "
                                 f"{entry.get(field)!r:.40}")
        try:
            target = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"{path}: the model has no layer {name[:80]!r}; the folder was quantized from another "
                             "model") from None
        if not isinstance(target, nn.Linear | PackedLinear) or (target.in_features, target.out_features) != (
                entry["in_features"], entry["out_features"]):
            raise ValueError(f"{path}: layer {name[:80]!r} is {entry['in_features']}x{entry['out_features']}, not "
                             "a linear layer of that size in the model; the folder was quantized from another model")
        if kind == "vq" and not (1 <= entry["d"] <= entry["in_features"] and 2 <= entry["k"] <= MAX_CODEBOOK):
            raise ValueError(f"{path}: layer {name[:80]!r}: d {entry['d']} or k {entry['k']} out of range")
        if kind == "uniform" and not (1 <= entry["bits"] <= 8 and 1 <= entry["group_size"] <= entry["in_features"]):
            raise ValueError(f"{path}: layer {name[:80]!r}: bits {entry['bits']} or group_size "
                             f"{entry['group_size']} out of range")
        stored_bits.add(math.log2(entry["k"]) / entry["d"] if kind == "vq" else entry["bits"])
        owner = entry.get("codebook")
        shared = layers.get(owner) if isinstance(owner, str) else None
        if owner is not None and (not isinstance(shared, dict) or shared.get("codebook") is not None
                                  or (shared.get("d"), shared.get("k")) != (entry.get("d"), entry.get("k"))):
            raise ValueError(f"{path}: layer {name[:80]!r} shares the codebook of {str(owner)[:80]!r}, which has no "
                             "codebook of its d and k")
    if config.get("bits") is not None and config["bits"] not in stored_bits:  # what the server tells clients
        raise ValueError(f"{path}: bits says {config['bits']!r}, but its layers store "
                         f"{', '.join(f'{b:g}' for b in sorted(stored_bits))} bits a weight")


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
    config = read_json(folder / CONFIG_NAME)
    if config.get("format_version") not in READABLE_VERSIONS:
        raise ValueError(f"unsupported quantized format version {config.get('format_version')} in {folder}")
    if isinstance(model_class_or_base_model, nn.Module):
        model = model_class_or_base_model
    else:  # the skeleton's parameters are never allocated: only the packed layers and the kept weights are
        from accelerate import init_empty_weights

        cls = model_class_or_base_model or _import_class(config["model_class"])
        model_config = read_json(folder / "config.json")
        check_config_integers(model_config, folder / "config.json")
        with init_empty_weights(include_buffers=False):  # buffers (rotary tables, ...) are made as usual
            model = cls.from_config(model_config)
    check_layer_entries(config, model, folder)
    for name, entry in config["layers"].items():
        shape = (entry["in_features"], entry["out_features"])
        if entry["kind"] == "vq":
            layer = VQLinear(*shape, entry["d"], entry["k"], bias=entry["bias"], mode=mode,
                             row_scale=entry.get("row_scale", False))
        else:
            layer = UniformLinear(*shape, entry["bits"], entry["group_size"], bias=entry["bias"], mode=mode)
        replace_module(model, name, layer)
    shared = {f"{name}.codebook" for name, entry in config["layers"].items() if entry.get("codebook")}
    expected = {key: tuple(t.shape) for key, t in model.state_dict().items() if key not in shared}
    compare_tensors(expected, safetensors_shapes(folder / WEIGHTS_NAME), folder / WEIGHTS_NAME)
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
