"""Model families the backend can serve, one adapter module each, picked from the folder they are given."""

from __future__ import annotations

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


def shipped_models() -> list[Path]:
    """The model folders shipped in ``backend/weights``, the default one first."""
    found = sorted(p for p in SHIPPED_WEIGHTS.iterdir() if p.is_dir() and p != DEFAULT_WEIGHTS
                   and any(a.recognises(p) for a in ADAPTERS))
    return [DEFAULT_WEIGHTS, *found]


__all__ = ["ADAPTERS", "DEFAULT_WEIGHTS", "LoadedModel", "ModelAdapter", "ModelCapabilities", "adapter_for",
           "shipped_models"]
