"""A model folder from elsewhere, checked before its weights are loaded.

Diffusers' ``from_pretrained`` builds the model from ``config.json`` and only then reads the weights, loosely: a
config that asks for a layer 10^9 wide allocates terabytes before anything is compared, a tensor the file lacks is
left random with a warning, an unknown one is dropped, and a truncated or pickled file gives the library's own
message. Here the config builds the model on the meta device (shapes only, no memory), the safetensors header (names
and shapes; no tensor is read) is compared with it, and each problem is one line that names the file. After loading,
weights that are not finite (a diverged run, a damaged copy) are refused too: they make black frames.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from backend.adapters.base import read_json

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
MAX_CONFIG_INTEGER = 16384  # any size or count in a model's config (Wan 14B's largest is 13824)
AGAIN = "copy the model folder again, or save it again where it was made"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]


def _integers(value: object, key: str = "") -> Iterator[tuple[str, int]]:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        yield key, value
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from _integers(item, f"{key}.{name}" if key else str(name))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _integers(item, f"{key}[{i}]")


def check_config_integers(config: dict, path: Path) -> None:
    """Refuse a config with a size or count no model this backend runs has (before anything is built on it)."""
    for key, value in _integers(config):
        if abs(value) > MAX_CONFIG_INTEGER:
            raise ValueError(f"{path}: {key} = {value:,} is beyond any model this backend runs (at most "
                             f"{MAX_CONFIG_INTEGER:,}); the config is damaged: {AGAIN}")


def meta_model(model_class: type, folder: Path) -> nn.Module:
    """The model that ``folder/config.json`` describes, built on the meta device: every shape, no memory."""
    path = Path(folder) / "config.json"
    config = read_json(path)
    check_config_integers(config, path)
    try:
        with torch.device("meta"):
            return model_class.from_config(config)
    except Exception as error:  # the class's own checks, or what a wrong type or size trips in torch
        raise ValueError(f"{path} does not describe a {model_class.__name__} ({type(error).__name__}: "
                         f"{_first_line(error)}): {AGAIN}") from None


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in a safetensors file, from its header alone."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as weights:
            return {key: tuple(weights.get_slice(key).get_shape()) for key in weights.keys()}
    except Exception as error:  # SafetensorError (truncated, not safetensors) or OSError
        raise ValueError(f"{path} is damaged ({_first_line(error)}): {AGAIN}") from None


def compare_tensors(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], path: Path) -> None:
    """Refuse a weights file whose tensors are not exactly the ones the model has (names and shapes)."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    reshaped = sorted(key for key in set(expected) & set(found) if expected[key] != found[key])
    problems = ([f"{len(missing)} tensors missing ({missing[0]}, ...)"] if missing else []) + \
               ([f"{len(extra)} unknown tensors ({extra[0]}, ...)"] if extra else []) + \
               ([f"{reshaped[0]} is {list(found[reshaped[0]])}, the config makes it {list(expected[reshaped[0]])}"
                 + (f" (and {len(reshaped) - 1} more)" if len(reshaped) > 1 else "")] if reshaped else [])
    if problems:
        raise ValueError(f"{path} does not fit its config.json: {'; '.join(problems)}; it was saved from another "
                         f"model or edited: {AGAIN}")


def check_model_folder(model_class: type, folder: Path) -> None:
    """Refuse a diffusers-style model folder (``config.json`` + safetensors weights) whose config cannot build the
    class or whose weights do not fit it. Pickled weights (``*.bin``) are never read: loading one can run code."""
    folder = Path(folder)
    expected = {key: tuple(tensor.shape) for key, tensor in meta_model(model_class, folder).state_dict().items()}
    weights = folder / WEIGHTS_FILE
    index = folder / f"{WEIGHTS_FILE}.index.json"
    if index.is_file():  # sharded (big models): the index names each tensor's file
        shards = set(read_json(index).get("weight_map", {}).values())
        if not all(isinstance(name, str) and name == Path(name).name for name in shards):
            raise ValueError(f"{index} names shard files outside its folder: {AGAIN}")
        found: dict[str, tuple[int, ...]] = {}
        for name in sorted(shards):
            found.update(safetensors_shapes(folder / name))
        compare_tensors(expected, found, index)
        return
    if not weights.is_file():
        pickled = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
        why = (f" ({pickled[0]} is a pickle file, which CinePreGen never loads: it can run code; save the model with "
               "safetensors)") if pickled else ""
        raise FileNotFoundError(f"{weights} is missing{why}: {AGAIN}")
    compare_tensors(expected, safetensors_shapes(weights), weights)


def check_finite_weights(model: nn.Module, folder: Path) -> None:
    """Refuse loaded weights holding NaN or infinity."""
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{folder}: {name} holds NaN or infinite values (a diverged training run or a damaged "
                             f"copy): {AGAIN}")
