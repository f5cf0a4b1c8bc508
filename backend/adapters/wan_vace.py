"""Wan 2.1 VACE (1.3B, 14B) from a local diffusers folder (``model_index.json`` naming ``WanVACEPipeline``).

How a shot bundle becomes the pipeline's inputs:

- **Size and length**: generated at the next multiple of 16 in each direction (VAE /8 times patch 2; the passes are
  padded by repeating their edge) and at the next 4k+1 frames (the VAE's temporal /4; the last frame repeats),
  then cropped back to the bundle's exact frames and size.
- **Control video**: the depth pass as VACE's depth control expects it, a grey disparity map (near bright, far and
  background black), normalised over the whole shot so a dolly does not flicker; the mask is white everywhere
  (generate every pixel, following the control).
- **References**: one per bound object, in object order; each acts only on its object's tokens, frame by frame,
  from the ID pass (``backend.models.wan_reference_attention``).
- **Prompt, seed, steps, guidance**: the bundle's prompt and seed; steps and guidance from ``cinepregen.json`` in
  the folder when it has one (``{"num_inference_steps": 30, "guidance_scale": 5.0}``), else those defaults.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# torch and diffusers are imported where they are used: the CLI lists this family in --help without loading them
from backend.adapters.base import LoadedModel, ModelAdapter, ModelCapabilities, StepCallback, quantization_of, read_json

SAMPLING_DEFAULTS = {"num_inference_steps": 30, "guidance_scale": 5.0, "negative_prompt": ""}
DEFAULT_FRAMES = 81  # Wan's own clip length (about 5 s at 16 fps)
COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")


class WanVaceAdapter(ModelAdapter):
    family = "wan-vace"

    @classmethod
    def recognises(cls, folder: Path) -> bool:
        index = Path(folder) / "model_index.json"
        try:
            return index.is_file() and read_json(index).get("_class_name") == "WanVACEPipeline"
        except ValueError:
            return False

    def check(self) -> None:
        index = read_json(self.folder / "model_index.json")
        missing = [name for name in COMPONENTS if index.get(name) and not (self.folder / name).is_dir()]
        if missing:
            raise FileNotFoundError(f"{self.folder} names {', '.join(missing)} in model_index.json but has no such "
                                    "folder; download the whole model folder (e.g. Wan2.1-VACE-1.3B-diffusers)")

    def sampling(self) -> dict:
        own = self.folder / "cinepregen.json"
        return {**SAMPLING_DEFAULTS, **(read_json(own) if own.is_file() else {})}

    def capabilities(self) -> ModelCapabilities:
        self.check()
        transformer = read_json(self.folder / "transformer" / "config.json")
        vae = read_json(self.folder / "vae" / "config.json")
        spatial = 2 ** len(vae.get("temperal_downsample", [False, True, True]))
        return ModelCapabilities(
            family=self.family, model_class=transformer.get("_class_name", "WanVACETransformer3DModel"),
            reads_prompt=True, default_frames=DEFAULT_FRAMES, frame_rule="4k+1",
            size_multiple=spatial * int(transformer.get("patch_size", [1, 2, 2])[-1]),
            default_steps=int(self.sampling()["num_inference_steps"]),
            quantization=quantization_of(self.folder / "transformer"))

    def load(self, device: str = "cpu") -> LoadedWanVace:
        import torch
        from diffusers import AutoencoderKLWan, WanVACEPipeline, WanVACETransformer3DModel
        from diffusers.utils import logging as diffusers_logging

        from backend.models.folder_check import check_model_folder
        from backend.quant.serialization import is_quantized_folder, load_quantized

        self.check()
        dtype = torch.float32 if device == "cpu" else torch.bfloat16
        extra = {}
        if is_quantized_folder(self.folder / "transformer"):
            # on an accelerator each layer is dequantized per call: peak memory is the packed weights plus one layer
            mode = "cached" if device == "cpu" else "per_call"
            extra["transformer"] = load_quantized(WanVACETransformer3DModel, self.folder / "transformer", mode=mode)
        else:  # its weights against its config before 1.3-14 B parameters are read (``folder_check``)
            check_model_folder(WanVACETransformer3DModel, self.folder / "transformer")
        check_model_folder(AutoencoderKLWan, self.folder / "vae")
        from transformers.utils import logging as transformers_logging

        diffusers_logging.disable_progress_bar()  # the caller shows progress; no bar per component
        transformers_logging.disable_progress_bar()
        pipeline = WanVACEPipeline.from_pretrained(self.folder, local_files_only=True, dtype=dtype, **extra)
        pipeline.set_progress_bar_config(disable=True)
        if device == "cpu":
            pipeline.to(device)
        else:  # the text encoder (umT5-XXL: 11 GB in bf16), the transformer and the VAE take the GPU in turn
            pipeline.enable_model_cpu_offload(device=device)
        return LoadedWanVace(pipeline, self.sampling(), self.capabilities().size_multiple)


def generated_size(width: int, height: int, multiple: int) -> tuple[int, int]:
    return -(-width // multiple) * multiple, -(-height // multiple) * multiple


def latent_frames_of(frames: int) -> list[list[int]]:
    """Which of ``frames`` (4k+1) video frames each latent frame covers: the first alone, then four at a time."""
    return [[0]] + [list(range(4 * t - 3, 4 * t + 1)) for t in range(1, (frames - 1) // 4 + 1)]


def control_frames(bundle, frames: int, width: int, height: int) -> list:
    """The depth pass as grey disparity frames (near bright), padded to ``frames`` x ``height`` x ``width``."""
    from PIL import Image

    depth = np.stack([p.depth for p in bundle.passes]).astype(np.float32)
    valid = depth > 0
    disparity = np.where(valid, 1.0 / np.where(valid, depth, 1.0), 0.0)
    if valid.any():
        low, high = disparity[valid].min(), disparity[valid].max()
        disparity = np.where(valid, 0.1 + 0.9 * (disparity - low) / max(high - low, 1e-8), 0.0)
    grey = (np.clip(disparity, 0, 1) * 255).round().astype(np.uint8)
    grey = _pad(grey, frames, width, height)
    return [Image.fromarray(np.repeat(frame[..., None], 3, axis=2)) for frame in grey]


def _pad(stack: np.ndarray, frames: int, width: int, height: int) -> np.ndarray:
    """(F, H, W) padded at the end of each axis by repeating the last frame, row and column."""
    return np.pad(stack, ((0, frames - stack.shape[0]), (0, height - stack.shape[1]), (0, width - stack.shape[2])),
                  mode="edge")


def reference_layout(bundle, object_ids: list[int], frames: int, width: int, height: int, multiple: int):
    """The ``ReferenceLayout`` of the bound objects: token r of latent frame t is True where object r covers any
    pixel of it in any video frame that latent frame holds (padding never counts)."""
    import torch

    from backend.models.wan_reference_attention import ReferenceLayout

    ids = np.stack([p.object_id for p in bundle.passes])
    padded = np.pad(ids, ((0, frames - ids.shape[0]), (0, 0), (0, 0)), mode="edge")  # repeated last frame
    padded = np.pad(padded, ((0, 0), (0, height - ids.shape[1]), (0, width - ids.shape[2])), constant_values=-1)
    token_h, token_w = height // multiple, width // multiple
    masks = []
    for obj in object_ids:
        per_latent = []
        for covered in latent_frames_of(frames):
            mask = (padded[covered] == obj).any(0)
            per_latent.append(mask.reshape(token_h, multiple, token_w, multiple).any((1, 3)).reshape(-1))
        masks.append(np.concatenate(per_latent))
    return ReferenceLayout(len(object_ids), token_h * token_w, torch.from_numpy(np.array(masks, dtype=bool)))


class LoadedWanVace(LoadedModel):
    def __init__(self, pipeline, sampling: dict, size_multiple: int):
        self.pipeline = pipeline
        self.sampling = sampling
        self.size_multiple = size_multiple
        self.default_steps = int(sampling["num_inference_steps"])

    def inputs(self, bundle) -> dict:
        """The pipeline's keyword arguments for a bundle (everything but steps, seed and callbacks)."""
        from PIL import Image

        from backend.models import wan_reference_attention
        from cinepregen_addon.core.model_choice import generated_frames

        width, height = generated_size(bundle.width, bundle.height, self.size_multiple)
        frames = generated_frames(len(bundle.passes), "4k+1")
        bound = [obj.id for obj in bundle.objects if obj.id in bundle.reference_images]
        layout = reference_layout(bundle, bound, frames, width, height, self.size_multiple) if bound else None
        for transformer in (self.pipeline.transformer, getattr(self.pipeline, "transformer_2", None)):
            if transformer is not None:
                wan_reference_attention.install(transformer, layout)
        references = [Image.fromarray(bundle.reference_images[i]) for i in bound] or None
        return dict(video=control_frames(bundle, frames, width, height),
                    mask=[Image.new("L", (width, height), 255)] * frames, reference_images=references,
                    prompt=bundle.prompt or "", negative_prompt=self.sampling["negative_prompt"],
                    height=height, width=width, num_frames=frames,
                    guidance_scale=float(self.sampling["guidance_scale"]))

    def generate(self, bundle, *, steps: int, seed: int, callback: StepCallback | None = None) -> np.ndarray:
        import torch

        def on_step_end(pipeline, step: int, timestep, tensors: dict) -> dict:
            if callback is not None:
                callback(step + 1, steps)
            return {}

        video = self.pipeline(**self.inputs(bundle), num_inference_steps=steps, output_type="np",
                              generator=torch.Generator(device="cpu").manual_seed(int(seed) % 2**63),
                              callback_on_step_end=on_step_end).frames[0]
        return np.asarray(video, np.float32)[:len(bundle.passes), :bundle.height, :bundle.width]
