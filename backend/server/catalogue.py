"""The models a server serves: its catalogue (names to weight folders), what health says of each, and the function
that generates a job with the model it names (in this process or on a Ray pool)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend.server.jobs import GenerateFn

if TYPE_CHECKING:
    from backend.server.app import Settings


def model_catalogue(settings: Settings) -> dict[str, Path]:
    """The models this server serves, by name (the folder's name), the default first: ``weights`` (or the shipped
    default) and ``models``; with neither given, every model folder shipped in ``backend/weights``."""
    from backend.adapters import shipped_models
    from backend.pipelines.previs_pipeline import DEFAULT_WEIGHTS

    folders = ([Path(settings.weights or DEFAULT_WEIGHTS), *settings.models]
               if settings.weights or settings.models else shipped_models())
    catalogue: dict[str, Path] = {}
    for folder in folders:
        name, n = folder.name, 2
        while name in catalogue:
            name, n = f"{folder.name}-{n}", n + 1
        catalogue[name] = folder
    return catalogue


def describe_model(name: str, folder: Path) -> dict[str, Any]:
    """A catalogue entry as ``/v1/health`` lists it (from its configs, nothing loaded); a folder that cannot be
    served says why instead of failing the whole health answer."""
    from backend.adapters import adapter_for

    try:
        return {"name": name, **adapter_for(folder).capabilities().to_dict()}
    except (OSError, ValueError) as error:
        return {"name": name, "error": str(error).replace(str(folder), name)}


def default_model_fields(entry: dict[str, Any]) -> dict[str, Any]:
    """The default model in health's top-level fields (what clients before the catalogue read)."""
    return {"model": entry.get("model_class", entry["name"]), "weights": entry["name"],
            "weights_found": "error" not in entry, "quantization": entry.get("quantization") or "none (full precision)"}


def default_generate_fn(settings: Settings, catalogue: dict[str, Path] | None = None) -> GenerateFn:
    """``backend.pipelines.generate.generate_shot`` with the job's model from the catalogue (``model_catalogue``
    unless given; the default one when the job names none) on the configured device, imported on first use."""
    catalogue = catalogue if catalogue is not None else model_catalogue(settings)

    def generate(bundle_dir: Path, out_dir: Path, *, model: str | None = None, **kwargs: Any) -> dict:
        from backend.pipelines.generate import generate_shot

        if model is not None and model not in catalogue:
            raise ValueError(f"model {model!r} is not served here any more (it serves: {', '.join(catalogue)})")
        folder = catalogue[model] if model else next(iter(catalogue.values()))
        return generate_shot(bundle_dir, out_dir, weights=folder, device=settings.device, **kwargs)

    return generate


def ray_pool(settings: Settings, catalogue: dict[str, Path]):
    """A Ray pool for the server's jobs and its generate function; a pool holds one model, so one is served."""
    from backend.distributed.ray_pool import RayShotPool

    if len(catalogue) > 1:
        raise ValueError("a server on Ray serves one model: start one server per model (drop --model, or give it "
                         "as --weights)")
    (name, folder), = catalogue.items()
    pool = RayShotPool(settings.ray, workers=settings.ray_workers, device=settings.device, weights=folder)
    return pool, pool.job_fn(name)
