"""PrevisPipeline: shot bundle in, frames out, with one readable denoising loop.

Scheduler: diffusers' ``FlowMatchEulerDiscreteScheduler``, because the model is trained with the rectified-flow
objective (``backend.training.losses``): the velocity derived from the model's output is what the Euler step integrates,
sampling is deterministic (no noise is injected after the start), and flow matching holds up at the low step counts
a CPU can afford, with the steps shifted towards high noise (``SAMPLING_SHIFT``). Classifier-free guidance is over
references: the unconditional branch drops every reference
(strength 0, which the model treats exactly as absent), so ``reference_guidance_scale`` sharpens each object's look
inside the masks of the referenced objects.
The bundle's text prompt is not read: the small default model has no text encoder.

Long shots are generated in overlapping windows of ``window_frames`` (``pipeline.json``): each window after the
first starts with the last ``context_frames`` frames generated before it as clean context (a model with
``context_channels`` reads them), and every per-clip quantity of the conditions is taken over the window
(``backend.conditioning.clip_conditions``), so frame 200 of a shot is generated exactly as frame 10 is. A model
without context channels generates the whole shot as one clip.

The DiT samples at its working resolution (its token budget); the frame refiner (``backend.models.frame_refiner``),
when the folder has one, brings each window's frames to the bundle's resolution with the full-resolution passes.
Without one, frames are upsampled bilinearly. Before that, the seams between the DiT's patches are smoothed where
the passes show no real edge (``backend.pipelines.patch_seams``), and at full resolution object edges are snapped to
the ID pass (``backend.pipelines.edge_snap``). Last, each object's colour is held at its mean over the shot, under the
clay pass's light (``backend.pipelines.colour_lock``).

The weights folder's layout and checks: ``backend.pipelines.previs_folder``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler

from backend.adapters import DEFAULT_WEIGHTS
from backend.conditioning import (
    SHADING_CHANNELS,
    batch_conditions,
    clip_conditions,
    lit_by_clay,
    shot_passes,
    working_resolution,
)
from backend.models.folder_check import check_finite_weights
from backend.models.frame_refiner import FrameRefiner
from backend.models.previs_dit import PrevisDiT, velocity_from_output
from backend.models.reference_encoder import ReferenceEncoder
from backend.pipelines.colour_lock import lock_object_colours, reference_anchors
from backend.pipelines.edge_snap import snap_to_object_edges
from backend.pipelines.patch_seams import smooth_patch_seams, smooth_upsampled_seams
from backend.pipelines.previs_folder import (
    SAMPLING_DEFAULTS,
    check_weights,
    check_weights_folder,
    full_precision_parts,
    read_sampling,
)
from backend.quant.serialization import load_quantized

# Timestep shift of the default scheduler (sigma' = shift * sigma / (1 + (shift - 1) * sigma)): most steps go to the
# high noise levels, where a shot's colours and layout are decided. Mean PSNR vs the Cycles target with previs-tiny
# (v3, step 1,750) on the 16 held-out shots: 4 even steps (its first setting) 14.0 dB; 8 steps with shift 6 17.4,
# with shift 10 17.2; 6 steps with shift 10 17.3. On the first 6 of them: 4 even steps 14.2, 8 even 15.6, 20 even
# 17.4, 50 even 17.7; 8 steps with shift 3 17.0, with shift 6 17.4.
SAMPLING_SHIFT = 6.0
SEAM_CUES = 4  # guidance channels the seam smoother reads: inverse depth and normals (its masks give the ID edges)
REFINER_CHUNK_FRAMES = 8  # frames refined per call (bounds memory at large sizes)

StepCallback = Callable[[int, int], None]  # (steps done, total steps); may raise to stop between steps


def clip_windows(frames: int, window: int, context: int) -> list[tuple[int, int, int]]:
    """(start, length, context frames) of each window that covers ``frames`` frames: windows of at most ``window``
    frames, each after the first starting with the last ``context`` frames of the one before."""
    if frames <= window:
        return [(0, frames, 0)]
    if not 0 <= context < window:
        raise ValueError(f"context_frames must be in [0, window_frames), got {context} for {window}")
    windows, start = [(0, window, 0)], window - context
    while start + context < frames:
        windows.append((start, min(window, frames - start), context))
        start += window - context
    return windows


class PrevisPipeline:
    def __init__(self, transformer: PrevisDiT, reference_encoder: ReferenceEncoder,
                 scheduler: FlowMatchEulerDiscreteScheduler | None = None, sampling: dict | None = None,
                 refiner: FrameRefiner | None = None):
        self.transformer = transformer.eval()
        self.reference_encoder = reference_encoder.eval()
        self.refiner = refiner.eval() if refiner is not None else None
        self.scheduler = scheduler or FlowMatchEulerDiscreteScheduler(shift=SAMPLING_SHIFT)
        self.sampling = {**SAMPLING_DEFAULTS, **(sampling or {})}

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    def to(self, device: str | torch.device) -> PrevisPipeline:
        for model in (self.transformer, self.reference_encoder, self.refiner):
            if model is not None:
                model.to(device)
        return self

    def save_pretrained(self, folder: str | Path) -> Path:
        folder = Path(folder)
        self.transformer.save_pretrained(folder / "transformer")
        self.reference_encoder.save_pretrained(folder / "reference_encoder")
        if self.refiner is not None:
            self.refiner.save_pretrained(folder / "refiner")
        self.scheduler.save_pretrained(folder / "scheduler")
        (folder / "pipeline.json").write_text(json.dumps(self.sampling, indent=2) + "\n")
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path = DEFAULT_WEIGHTS, device: str = "cpu") -> PrevisPipeline:
        folder = Path(folder)
        check_weights_folder(folder)
        sampling = read_sampling(folder)
        check_weights(folder)
        # a folder on disk, never the Hub; safetensors only
        local = dict(low_cpu_mem_usage=False, local_files_only=True, use_safetensors=True)
        parts = full_precision_parts(folder)
        loaded = {name: model_class.from_pretrained(folder / name, **local) for name, model_class in parts.items()}
        if "transformer" not in loaded:
            loaded["transformer"] = load_quantized(PrevisDiT, folder / "transformer")
        for name, model in loaded.items():
            check_finite_weights(model, folder / name)
        return cls(loaded["transformer"], loaded["reference_encoder"],
                   FlowMatchEulerDiscreteScheduler.from_pretrained(folder / "scheduler", local_files_only=True),
                   sampling, loaded.get("refiner")).to(device)

    @torch.no_grad()
    def __call__(self, bundle, *, num_inference_steps: int | None = None, seed: int | None = None,
                 reference_guidance_scale: float | None = None, masked: bool = True, independent_frames: bool = False,
                 references_override: dict[int, np.ndarray] | None = None,
                 reference_strengths: dict[int, float] | None = None, smooth_seams: bool = True,
                 lock_colours: bool | None = None, callback: StepCallback | None = None) -> np.ndarray:
        """Generate the shot: (F, H, W, 3) float32 frames in [0, 1] at the bundle's resolution.

        Args:
            bundle: a ``ShotBundle`` (``cinepregen_addon.core.shot_bundle``).
            num_inference_steps, reference_guidance_scale: default to the weights' ``pipeline.json``.
            seed: defaults to the bundle's seed; the same seed gives the same clip on CPU.
            masked: False applies every reference to every token (the leakage baseline).
            independent_frames: generate each frame as a clip of length 1 with fresh noise (the temporal baseline).
            references_override: object id -> RGB uint8 image, replacing the bundle's references for this call.
            reference_strengths: object id -> strength (default 1; 0 switches a reference off).
            smooth_seams: take the patch grid out of the DiT's frames (``backend.pipelines.patch_seams``) before
                they are refined, and out of the refined frames at the upsampled pitch when the bundle's size is a
                whole multiple of the working size; False shows the grid (the baseline of that step).
            lock_colours: hold each object's colour at its shot mean under the clay pass's light
                (``backend.pipelines.colour_lock``); False shows the sampler's drift and flicker. Defaults to the
                weights' ``pipeline.json``. With the albedo previs-tiny the lock gains 0.13 dB of held-out PSNR
                (20.87 against 20.74 dB, the pipeline's frames on the 15 visible held-out shots) and holds colour:
                without it a steady step drifted 28% over a 20-frame shot. With ``reference_colours`` in
                ``pipeline.json`` (and ``masked``), objects with a reference are held towards the colour their
                reference shows (``colour_lock.reference_anchors``).
            callback: called after every denoising step with (done, total); raise from it to cancel.
        """
        # 1. Check inputs and defaults
        steps = int(num_inference_steps or self.sampling["num_inference_steps"])
        scale = float(self.sampling["reference_guidance_scale"] if reference_guidance_scale is None
                      else reference_guidance_scale)
        if steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {steps}")
        generator = torch.Generator().manual_seed(int(bundle.seed if seed is None else seed))

        # 2. The shot's passes, read once, and the reference tokens of the objects that have a reference
        config = self.transformer.config
        passes = shot_passes(bundle, references_override)
        width, height = working_resolution(bundle.width, bundle.height, config.patch_size,
                                           self.transformer.max_tokens_per_frame)
        tokens = strengths = active = None
        if passes.references is not None:
            per_object = passes.has_reference.float()
            for i, obj_id in enumerate(passes.ids):
                per_object[i] *= (reference_strengths or {}).get(obj_id, 1.0)
            active = per_object != 0  # objects without a reference (or switched off) cost nothing
            if active.any():
                tokens = self.reference_encoder(passes.references[active].to(self.device))[None]  # (1, N, T, D)
                strengths = per_object[active][None].to(self.device)
            else:
                active = None

        object_ids = passes.object_ids.numpy()  # (F, H, W): edges are snapped and colours locked by it

        # 3. Denoise window by window (or each frame alone for the independent-frames baseline), then refine
        frames = passes.frames
        if independent_frames:
            windows = [(f, 1, 0) for f in range(frames)]
        elif config.context_channels:
            windows = clip_windows(frames, int(self.sampling["window_frames"]), int(self.sampling["context_frames"]))
        else:
            windows = [(0, frames, 0)]
        total = steps * len(windows)
        low = torch.zeros(frames, 3, height, width, device=self.device)  # the DiT's frames in [-1, 1]
        video = torch.zeros(frames, 3, bundle.height, bundle.width)
        for w, (start, length, context) in enumerate(windows):
            def step_callback(i: int, done: int = w * steps) -> None:
                if callback is not None:
                    callback(done + i, total)

            clip = clip_conditions(passes, start, length, width, height,
                                   full_resolution=self.refiner is not None or self.transformer.paints_albedo)
            inputs = batch_conditions([clip])
            context_input = None
            if config.context_channels:
                context_input = torch.zeros(1, length, config.context_channels, height, width, device=self.device)
                context_input[0, :context, :3] = low[start:start + context]
                context_input[0, :context, 3] = 1.0
            masks = None
            if tokens is not None and masked:
                masks = inputs["object_masks"][:, active].to(self.device)
            shading = inputs["shading"].to(self.device)
            picture = self._denoise(inputs["guidance"].to(self.device), shading, context_input, tokens, masks,
                                    strengths, steps, scale, generator, step_callback)[0]
            if smooth_seams:
                coverage = inputs["object_masks"]
                coverage = coverage[0].transpose(0, 1).to(self.device) if coverage is not None else None
                picture = smooth_patch_seams(picture, inputs["guidance"][0, :, :SEAM_CUES].to(self.device),
                                             config.patch_size, coverage)
            lit = lit_by_clay(picture, shading[0]) if self.transformer.paints_albedo else picture
            low[start + context:start + length] = lit[context:]
            done = slice(start + context, start + length)
            upscale, pitch = bundle.width // width, None
            if smooth_seams and upscale > 1 and (bundle.width, bundle.height) == (width * upscale, height * upscale):
                pitch = config.patch_size * upscale
            video[done] = self._to_bundle_size(picture[context:], inputs["full_guidance"], context, bundle.height,
                                               bundle.width, object_ids[done], pitch)

        # 4. As (F, H, W, 3) in [0, 1], each object's colour held over the shot
        clip = ((video.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
        if self.sampling["lock_colours"] if lock_colours is None else lock_colours:
            clay = [p.clay for p in bundle.passes]
            shading = None if any(c is None for c in clay) else np.stack(clay).astype(np.float32) / 255.0
            # an anchor is a masked look (the unmasked baseline goes without); at weight 0 nothing is keyed again
            calibration = self.sampling.get("reference_colours") or {}
            weight, anchors = (float(calibration.get("weight", 0.0)) if masked else 0.0), {}
            if weight:
                images = bundle.reference_images if references_override is None else references_override
                live = {i: image for i, image in images.items() if (reference_strengths or {}).get(i, 1.0) != 0}
                anchors = reference_anchors(live, calibration)
            clip = lock_object_colours(clip, object_ids, shading, anchors, weight)
        return clip

    def _to_bundle_size(self, frames: torch.Tensor, full_guidance: torch.Tensor | None, skip: int, height: int,
                        width: int, object_ids: np.ndarray, seam_pitch: int | None = None) -> torch.Tensor:
        """(N, 3, h, w) frames (or albedo) in [-1, 1] as frames at the bundle's size: refined with the window's
        full-resolution guidance (frames after its first ``skip``), or upsampled bilinearly without a refiner. On
        what the model painted, the grid left at ``seam_pitch`` (the upsampled patch pitch; None: none) is smoothed
        (``smooth_upsampled_seams``) and object edges are snapped to the frames' ID pass ``object_ids``
        (``snap_to_object_edges``); only then is an albedo lit by the full-resolution clay pass, so shadow edges stay
        the engine's."""
        frames = frames.float()
        if full_guidance is None:  # a frame-painting model without a refiner reads no full-resolution passes
            if frames.shape[-2:] == (height, width):
                return frames.cpu()
            return F.interpolate(frames, size=(height, width), mode="bilinear", align_corners=False).cpu()
        guidance = full_guidance[0, skip:]
        albedo = self.refiner.config.albedo if self.refiner is not None else self.transformer.paints_albedo
        out = []
        for i in range(0, len(frames), REFINER_CHUNK_FRAMES):
            chunk = slice(i, i + REFINER_CHUNK_FRAMES)
            cues = guidance[chunk].to(self.device)
            if self.refiner is None:
                painted = F.interpolate(frames[chunk], size=cues.shape[-2:], mode="bilinear", align_corners=False)
            else:
                painted = self.refiner.paint(frames[chunk], cues).float()
            if seam_pitch is not None:
                painted = smooth_upsampled_seams(painted, cues[:, :SEAM_CUES], object_ids[chunk], seam_pitch)
            painted = snap_to_object_edges(painted, object_ids[chunk], int(self.sampling["edge_snap_radius"]))
            out.append((lit_by_clay(painted, cues[:, -SHADING_CHANNELS:]) if albedo else painted).cpu())
        return torch.cat(out)

    def _denoise(self, guidance: torch.Tensor, shading: torch.Tensor, context: torch.Tensor | None,
                 tokens: torch.Tensor | None, masks: torch.Tensor | None, strengths: torch.Tensor | None, steps: int,
                 scale: float, generator: torch.Generator, step_callback: Callable[[int], None]) -> torch.Tensor:
        """One clip's sampling loop: Euler steps on the flow from noise (sigma 1) to frames (sigma 0). Returns the
        clip in the model's own terms: the last step's (guided) albedo for a model that paints albedo, which the
        refiner lights at full resolution, else the sampled frames."""
        batch, frames, _, height, width = guidance.shape
        sample = torch.randn((batch, frames, 3, height, width), generator=generator).to(self.device)
        shading = shading if self.transformer.config.shading_channels else None
        clip_shading = shading  # the clip's own, for lighting an albedo output (shading is doubled for CFG below)
        use_cfg = tokens is not None and scale != 1.0
        # With masks, guidance sharpens the references only where they act (the union of the referenced objects'
        # masks); elsewhere the conditional prediction stands. On the 16 held-out shots this took the leakage of a
        # reference edit from 0.228 to 0.144 for 0.1 dB of PSNR with the first-stage previs-tiny (guidance everywhere,
        # or none outside, leaked more).
        inside = None if masks is None or not use_cfg else masks.sum(1).clamp(0, 1).unsqueeze(2)  # (B, F, 1, h, w)
        if use_cfg:  # batch [unconditional (all strengths 0), conditional]
            guidance = guidance.repeat(2, 1, 1, 1, 1)
            shading = None if shading is None else shading.repeat(2, 1, 1, 1, 1)
            context = None if context is None else context.repeat(2, 1, 1, 1, 1)
            tokens = tokens.repeat(2, 1, 1, 1)
            masks = None if masks is None else masks.repeat(2, 1, 1, 1, 1)
            strengths = torch.cat([torch.zeros_like(strengths), strengths])

        self.scheduler.set_timesteps(steps, device=self.device)
        for i, t in enumerate(self.scheduler.timesteps):
            model_input = sample.repeat(2, 1, 1, 1, 1) if use_cfg else sample
            timestep = t.expand(model_input.shape[0])
            output = self.transformer(model_input, timestep, guidance, tokens, masks, strengths, shading, context)
            if use_cfg:  # on the output: the velocity is affine in it, so this is guidance on the velocity
                uncond, cond = output.chunk(2)
                guided = (scale - 1) * (cond - uncond)
                output = cond + (guided if inside is None else guided * inside)
            velocity = velocity_from_output(self.transformer, output, sample, timestep[:batch] / 1000, clip_shading)
            sample = self.scheduler.step(velocity, t, sample, return_dict=False)[0]
            step_callback(i + 1)
        return output if self.transformer.paints_albedo else sample


def make_generate_fn(weights: str | Path | None = None, steps: int | None = None, device: str = "cpu",
                     pipeline: PrevisPipeline | None = None):
    """The pipeline (given, or loaded from ``weights``) as the evaluation harness's ``generate_fn(bundle, *, seed,
    references_override=None, independent_frames=False, masked=True) -> (F, H, W, 3)`` (``backend.eval.evaluate``)."""
    pipeline = pipeline or PrevisPipeline.from_pretrained(weights or DEFAULT_WEIGHTS, device=device)

    def generate_fn(bundle, *, seed: int, references_override=None, independent_frames: bool = False,
                    masked: bool = True) -> np.ndarray:
        return pipeline(bundle, num_inference_steps=steps, seed=seed, references_override=references_override,
                        independent_frames=independent_frames, masked=masked)

    return generate_fn
