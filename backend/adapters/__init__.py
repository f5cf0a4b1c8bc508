"""Model families the backend can serve, one adapter module each, picked from the folder they are given."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

from backend.adapters.base import LoadedModel, ModelAdapter, ModelCapabilities
from backend.adapters.previs import PrevisAdapter
from backend.adapters.wan_vace import WanVaceAdapter

ADAPTERS: tuple[type[ModelAdapter], ...] = (PrevisAdapter, WanVaceAdapter)
SHIPPED_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
DEFAULT_WEIGHTS = SHIPPED_WEIGHTS / "previs-tiny"  # the default model: the demo's, and the server's first


def adapter_for(folder: str | Path) -> ModelAdapter:
    """The adapter of the family whose model folder ``folder`` is; ValueError/FileNotFoundError saying what it is
    instead. Nothing is loaded."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no model folder at {folder}; pass a saved model folder (for example "
                                f"{SHIPPED_WEIGHTS / 'previs-tiny'})")
    for adapter in ADAPTERS:
        if adapter.recognises(folder):
            return adapter(folder)
    families = ", ".join(a.family for a in ADAPTERS)
    raise ValueError(f"{folder} holds {_what_is_in(folder)}, which this backend cannot run (it runs: {families}); "
                     "pass a model folder of one of those (the folder with model_index.json or transformer/)")


def _what_is_in(folder: Path) -> str:
    """The class a folder's configs name (``model_index.json``, ``config.json``, ``transformer/config.json``)."""
    from backend.adapters.base import read_json

    for config in (folder / "model_index.json", folder / "config.json", folder / "transformer" / "config.json"):
        try:
            name = read_json(config).get("_class_name") if config.is_file() else None
        except ValueError:
            return f"a damaged {config.name}"
        if name:
            return f"a {name} model"
    return "no model config"


_loaded: dict = {}  # the one model kept in memory: {"key": (folder, device, fingerprint), "model": LoadedModel}
_loading = threading.Lock()


def _fingerprint(folder: Path) -> tuple:
    """What changes when a model folder's files do (sizes and modification times), so new weights are loaded."""
    files = [(p, p.stat()) for p in folder.rglob("*") if p.is_file()]
    return tuple(sorted((str(p.relative_to(folder)), stat.st_size, stat.st_mtime_ns) for p, stat in files))


def load_model(folder: str | Path, device: str = "cpu") -> tuple[LoadedModel, bool]:
    """The folder's model loaded on ``device``, and whether it was already in memory.

    One model is kept between calls (a server's jobs mostly use the same one, and a big model takes minutes to
    load); asking for another folder or device, or for a folder whose files changed, frees the kept one before
    loading, so two big models are never in memory at once."""
    folder = Path(folder).resolve()
    adapter = adapter_for(folder)
    key = (folder, device, _fingerprint(folder))
    with _loading:
        if _loaded.get("key") == key:
            return _loaded["model"], True
        _loaded.clear()
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
        model = adapter.load(device)
        _loaded.update(key=key, model=model)
        return model, False


def shipped_models() -> list[Path]:
    """The model folders shipped in ``backend/weights``, the default one first."""
    found = sorted(p for p in SHIPPED_WEIGHTS.iterdir() if p.is_dir() and p != DEFAULT_WEIGHTS
                   and any(a.recognises(p) for a in ADAPTERS))
    return [DEFAULT_WEIGHTS, *found]


__all__ = ["ADAPTERS", "DEFAULT_WEIGHTS", "LoadedModel", "ModelAdapter", "ModelCapabilities", "adapter_for",
           "load_model", "shipped_models"]
