"""``cinepregen quantize``: VQ4DiT (or a baseline) post-training quantization of a diffusers-style model folder.

`--weights` is a model folder or a pipeline folder (`transformer/` beside `reference_encoder/`, `scheduler/`, ...):
then the transformer is quantized into `OUT/transformer/` and everything else is copied unchanged.
The model class is the one named by `_class_name` in the folder's `config.json`, looked up in `backend.models`,
then in diffusers (so a Wan VACE or DiT folder needs no `--model-class`). Calibration inputs come from the model
module's `make_calibration_inputs(model, batch_size) -> dict` when it has one (a further parameter named after a
component folder of the pipeline, such as `reference_encoder`, receives that component), else from the model's own
config (`backend.quant.calibration_inputs`).

The model loads in its file's dtype (a bf16 Wan 14B is 28 GB, not 56) and each block comes onto `--device` in float32
only while it is calibrated (`backend.quant.offload`): a 14B model calibrates on one 24 GB GPU, or on a CPU with 64 GB.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import pkgutil
import shutil
import sys
from pathlib import Path

# backend.quant.METHODS, spelled out here so that the command line builds without torch (Blender's own Python
# runs `cinepregen render-passes`); a test keeps the two equal.
METHOD_CHOICES = ("vq4dit", "kmeans", "codebook", "rtn", "rtn-group")


class WeightsError(ValueError):
    """The --weights folder cannot be loaded; the message says what is missing."""


def check_weights_folder(folder: Path) -> dict:
    """The folder's config.json, after checking the folder holds a config and safetensors weights."""
    if not folder.is_dir():
        raise WeightsError(f"weights folder {folder} does not exist (train a model first, or point --weights at one)")
    if not (folder / "config.json").is_file():
        raise WeightsError(f"{folder} has no config.json: not a diffusers-style model folder")
    if (folder / "quantization_config.json").is_file():
        raise WeightsError(f"{folder} is quantized already; quantize the full-precision folder it was made from")
    if not list(folder.glob("*.safetensors")):
        raise WeightsError(f"{folder} has a config.json but no *.safetensors weights")
    from backend.adapters.base import read_json

    try:
        return read_json(folder / "config.json")
    except ValueError as error:
        raise WeightsError(str(error)) from None


def check_component(cls: type, folder: Path) -> None:
    """The folder's weights against its config (``backend.models.folder_check``), before minutes of calibration."""
    from backend.models.folder_check import check_model_folder

    try:
        check_model_folder(cls, folder)
    except (OSError, ValueError) as error:
        raise WeightsError(str(error)) from None


def resolve_model_class(config: dict, model_class: str | None = None) -> type:
    """The class to load: `module:Class` if given, else config `_class_name` searched in backend.models, then in
    diffusers (any of its models: WanVACETransformer3DModel, DiTTransformer2DModel, ...)."""
    if model_class:
        module_name, _, name = model_class.partition(":")
        return getattr(importlib.import_module(module_name), name)
    name = config.get("_class_name")
    if not name:
        raise WeightsError("config.json has no _class_name; pass --model-class module:Class")
    import backend.models

    for info in pkgutil.iter_modules(backend.models.__path__):
        module = importlib.import_module(f"backend.models.{info.name}")
        if isinstance(getattr(module, name, None), type):
            return getattr(module, name)
    import diffusers

    found = getattr(diffusers, name, None)
    if isinstance(found, type):
        return found
    raise WeightsError(f"no model class {name!r} in backend.models or diffusers; pass --model-class module:Class")


def stored_dtype(folder: Path):
    """The floating dtype most of the folder's safetensors weights are stored in (float32 when there are none)."""
    import torch
    from safetensors import safe_open

    counts: dict[str, int] = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), "pt") as weights:
            for name in weights.keys():
                piece = weights.get_slice(name)
                kind = piece.get_dtype()
                if kind in ("F16", "BF16", "F32", "F64"):
                    size = 1
                    for extent in piece.get_shape():
                        size *= extent
                    counts[kind] = counts.get(kind, 0) + size
    names = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
    return names[max(counts, key=counts.get)] if counts else torch.float32


def calibration_components(maker, weights: Path) -> dict:
    """The pipeline parts that the calibration-input maker asks for by parameter name (`reference_encoder=` for
    PrevisDiT), loaded from the pipeline folder's component folders of those names (checked by
    ``check_pipeline_parts`` first)."""
    components = {}
    for name in inspect.signature(maker).parameters:
        folder = weights / name
        if name != "transformer" and (folder / "config.json").is_file():
            components[name] = resolve_model_class(check_weights_folder(folder)).from_pretrained(
                folder, local_files_only=True, use_safetensors=True).eval()
    return components


def check_pipeline_parts(weights: Path) -> None:
    """The diffusers component folders (a ``_class_name`` in their config) that are copied on beside the quantized
    transformer, checked like it; others (a transformers text encoder, a tokenizer) load with their own library."""
    for folder in sorted(p for p in weights.iterdir() if p.is_dir() and p.name != "transformer"):
        if (folder / "config.json").is_file():
            config = check_weights_folder(folder)
            if config.get("_class_name"):
                check_component(resolve_model_class(config), folder)


PIPELINE_FILES = ("pipeline.json", "model_index.json", "cinepregen.json")


def _copy_pipeline_parts(weights: Path, out: Path) -> None:
    """Copy the pipeline's parts (component folders, sampler settings) except the transformer, which is written
    quantized. Model cards, evaluations and pictures describe the full-precision model, so they stay behind."""
    out.mkdir(parents=True, exist_ok=True)
    for entry in weights.iterdir():
        if entry.is_dir() and entry.name != "transformer":
            shutil.copytree(entry, out / entry.name, dirs_exist_ok=True)
        elif entry.name in PIPELINE_FILES:
            shutil.copy2(entry, out / entry.name)


def _run(args) -> int:
    from tqdm import tqdm

    from backend.quant import bits_to_vq_config, quantize_model, save_quantized, size_on_disk
    from backend.quant.calibration_inputs import config_calibration_inputs

    logging.basicConfig(level=logging.WARNING)
    weights, out = Path(args.weights), Path(args.out)
    is_pipeline = (weights / "transformer" / "config.json").is_file()
    model_folder, model_out = (weights / "transformer", out / "transformer") if is_pipeline else (weights, out)
    try:
        config_json = check_weights_folder(model_folder)
        cls = resolve_model_class(config_json, args.model_class)
        check_component(cls, model_folder)
        maker = getattr(sys.modules[cls.__module__], "make_calibration_inputs", None) or config_calibration_inputs
        if is_pipeline:
            check_pipeline_parts(weights)
        components = calibration_components(maker, weights) if is_pipeline else {}
    except WeightsError as error:
        print(f"cinepregen quantize: {error}", file=sys.stderr)
        return 2
    device = args.device
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print(f"cinepregen quantize: --device {device} but torch sees no CUDA GPU here; use --device cpu",
                  file=sys.stderr)
            return 2
    model = cls.from_pretrained(model_folder, local_files_only=True, use_safetensors=True,
                                torch_dtype=stored_dtype(model_folder)).eval()
    overrides = {k: v for k, v in (("iterations", args.iterations), ("calibration_samples", args.samples),
                                   ("batch_size", args.batch_size), ("seed", args.seed)) if v is not None}
    if args.codebooks:
        overrides["share_codebooks"] = args.codebooks == "shape"
    config = bits_to_vq_config(args.bits, **overrides)
    with tqdm(desc=f"{args.method} {args.bits}-bit", unit="block") as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        info = quantize_model(model, args.method, args.bits, config,
                              make_calibration_inputs=lambda: maker(model, config.batch_size, **components),
                              progress=progress, device=device)
    if is_pipeline:
        _copy_pipeline_parts(weights, out)
    save_quantized(model, model_out, info)
    block_error, path_error = (_figure(value) for value in (info.mean_block_error, info.path_error))
    stored = json.loads((model_out / "quantization_config.json").read_text())
    print(f"{args.method} {args.bits}-bit: {info.bits_per_weight:.3f} bits/weight in the {len(info.layers)} quantized "
          f"layers (codebooks included), {stored['bits_per_parameter']:.2f} bits/parameter for the whole file "
          f"({len(info.skipped)} layers kept in full precision), "
          f"model {size_on_disk(model_out) / 2**20:.2f} MiB on disk vs {size_on_disk(model_folder) / 2**20:.2f} MiB "
          f"full precision, mean relative block-output MSE {block_error} (full-precision inputs), "
          f"last block's {path_error} (all blocks quantized), {info.seconds:.1f} s -> {out}")
    return 0


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "quantize", help="quantize a model folder with VQ4DiT or a baseline",
        description="Quantize a model's transformer (VQ4DiT: k-means codebooks, candidate assignments with soft "
                    "ratios, zero-data block-wise calibration; or RTN / k-means / codebook-only baselines) and save "
                    "it as a folder that loads like the original.")
    parser.add_argument("--weights", required=True,
                        help="model folder (config.json + safetensors) or pipeline folder with transformer/")
    parser.add_argument("--out", required=True, help="output folder for the quantized model (or pipeline)")
    parser.add_argument("--bits", type=int, choices=(2, 3, 4), default=2, help="bits per weight (default: 2)")
    parser.add_argument("--method", choices=METHOD_CHOICES, default="vq4dit", help="default: vq4dit")
    parser.add_argument("--iterations", type=int, help="calibration steps per block")
    parser.add_argument("--samples", type=int, help="calibration forwards (sampled timesteps)")
    parser.add_argument("--batch-size", type=int, help="batch of each calibration forward")
    parser.add_argument("--seed", type=int, help="seed of k-means and calibration inputs")
    parser.add_argument("--codebooks", choices=("layer", "shape"),
                        help="one codebook a layer, or one for a block's layers of each weight shape "
                             "(default: shape at 2 bits, layer at 3 and 4)")
    parser.add_argument("--device", default="cpu",
                        help="where each block is calibrated, one at a time in float32 (cpu, cuda, cuda:1; default: "
                             "cpu); the rest of the model waits in host memory in its file's dtype")
    parser.add_argument("--model-class", help="module:Class, when config.json's _class_name is not in backend.models")
    parser.set_defaults(func=_run)
