"""A previs model folder: what it holds, and its checks before anything is loaded.

Weights folder layout (``save_pretrained``/``from_pretrained``)::

    transformer/        PrevisDiT (config.json + safetensors), or its quantized form (``cinepregen quantize``:
                        quantization_config.json + packed weights), loaded the same way
    reference_encoder/  ReferenceEncoder
    refiner/            FrameRefiner (optional)
    scheduler/          scheduler_config.json
    pipeline.json       sampling defaults: num_inference_steps, reference_guidance_scale, window_frames,
                        context_frames, lock_colours, reference_colours (the colour lock's reference anchor:
                        weight, picture_gain, swatch_gain from ``cinepregen calibrate-colours``; null: off),
                        edge_snap_radius (pixels; 0: off); checked when the folder loads (``read_sampling``)
"""

from __future__ import annotations

import math
from pathlib import Path

from backend.adapters.base import read_json
from backend.models.folder_check import check_model_folder, safetensors_shapes
from backend.models.frame_refiner import FrameRefiner
from backend.models.previs_dit import PrevisDiT
from backend.models.reference_encoder import ReferenceEncoder
from backend.pipelines.edge_snap import EDGE_SNAP_RADIUS
from backend.quant.serialization import WEIGHTS_NAME as QUANTIZED_WEIGHTS
from backend.quant.serialization import is_quantized_folder

SAMPLING_DEFAULTS = {"num_inference_steps": 8, "reference_guidance_scale": 2.0, "window_frames": 16,
                     "context_frames": 4, "lock_colours": True, "reference_colours": None,
                     "edge_snap_radius": EDGE_SNAP_RADIUS}


def check_weights_folder(folder: Path) -> None:
    """Raise (FileNotFoundError, ValueError) with what is wrong unless ``folder`` is a PrevisPipeline folder;
    nothing is loaded, so a command can say so at once."""
    config = Path(folder) / "transformer" / "config.json"
    if not config.is_file():
        raise FileNotFoundError(
            f"no previs model weights in {folder} (expected {config}); "
            f"train them with `cinepregen train` or pass --weights DIR pointing at a saved model folder")
    model_class = read_json(config).get("_class_name")
    if model_class != PrevisDiT.__name__:
        raise ValueError(f"{folder} holds a {model_class} model; this pipeline runs PrevisDiT folders "
                         "(saved by `cinepregen train` or PrevisPipeline.save_pretrained)")
    for part in ("reference_encoder/config.json", "scheduler/scheduler_config.json"):
        if not (Path(folder) / part).is_file():
            raise FileNotFoundError(f"{folder} has no {part}: a previs model folder holds transformer/, "
                                    "reference_encoder/ and scheduler/; copy the whole folder")


def full_precision_parts(folder: Path) -> dict[str, type]:
    """The folder's parts that ``from_pretrained`` loads as diffusers models (the transformer unless quantized)."""
    parts = {"reference_encoder": ReferenceEncoder}
    if (Path(folder) / "refiner" / "config.json").is_file():
        parts["refiner"] = FrameRefiner
    if not is_quantized_folder(Path(folder) / "transformer"):
        parts["transformer"] = PrevisDiT
    return parts


def check_weights(folder: Path) -> None:
    """Raise ValueError/FileNotFoundError naming the file unless every part's weights fit its config (names and
    shapes from the safetensors headers, the model built on the meta device: ``backend.models.folder_check``);
    nothing is read, so a server can list a damaged model with its reason at start."""
    for name, model_class in full_precision_parts(folder).items():
        check_model_folder(model_class, Path(folder) / name)
    if is_quantized_folder(Path(folder) / "transformer"):  # its layers are checked as it loads (load_quantized)
        safetensors_shapes(Path(folder) / "transformer" / QUANTIZED_WEIGHTS)


def _number(value: object, low: float, high: float, integer: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
        return False
    return math.isfinite(value) and low <= value <= high


def read_sampling(folder: Path) -> dict:
    """The sampling settings of a weights folder (``pipeline.json`` over ``SAMPLING_DEFAULTS``), checked, so that a
    folder trained or edited elsewhere is refused at load with the setting named, not midway through a shot."""
    path = Path(folder) / "pipeline.json"
    sampling = {**SAMPLING_DEFAULTS, **(read_json(path) if path.is_file() else {})}
    unknown = sorted(set(sampling) - set(SAMPLING_DEFAULTS))
    if unknown:
        raise ValueError(f"{path}: {unknown[0]!r} is not a sampling setting (known: {', '.join(SAMPLING_DEFAULTS)})")
    ranges = {"num_inference_steps": (1, 1000, True), "reference_guidance_scale": (0.0, 100.0, False),
              "window_frames": (1, 4096, True), "context_frames": (0, 4095, True), "edge_snap_radius": (0, 16, True)}
    for key, (low, high, integer) in ranges.items():
        if not _number(sampling[key], low, high, integer):
            kind = "an integer" if integer else "a number"
            raise ValueError(f"{path}: {key} must be {kind} from {low} to {high}, got {sampling[key]!r}")
    if sampling["context_frames"] >= sampling["window_frames"]:
        raise ValueError(f"{path}: context_frames ({sampling['context_frames']}) must be below window_frames "
                         f"({sampling['window_frames']})")
    if not isinstance(sampling["lock_colours"], bool):
        raise ValueError(f"{path}: lock_colours must be true or false, got {sampling['lock_colours']!r}")
    anchor = sampling["reference_colours"]
    if anchor is not None:
        gains = [anchor.get(k) for k in ("picture_gain", "swatch_gain")] if isinstance(anchor, dict) else []
        if not (gains and _number(anchor.get("weight"), 0.0, 1.0, False)
                and all(isinstance(g, list) and len(g) == 3 and all(_number(v, 0.0, 100.0, False) for v in g)
                        for g in gains)):
            raise ValueError(f"{path}: reference_colours must be null or {{weight in [0, 1], picture_gain and "
                             "swatch_gain: 3 numbers each}} as `cinepregen calibrate-colours --write` writes it")
    return sampling
