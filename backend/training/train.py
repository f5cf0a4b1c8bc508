"""``cinepregen train``: fit the previs model and its frame refiner on a procedural dataset, resumable, with EMA and
validation.

nanoGPT-style: one config dataclass, one loop. Every shot's passes are read once and kept in memory; each step draws
random shots, a clip length (mostly the pipeline's window, sometimes shorter: short shots are generated whole) and
a random window of frames, and builds the window's conditions exactly as the pipeline does
(``backend.conditioning.clip_conditions``). Half the windows start with clean context frames, as every window of
a long shot after the first does; some drop the clay pass, which a bundle may lack. The refiner learns on crops of
the same call's predictions at the bundle's resolution, or at the working resolution (bundles that small exist too).
Shots the data build adds while a run goes on are picked up at each validation.

Outputs in ``--out``: ``checkpoint.pt`` (model, refiner, EMA, optimiser, step, RNG; rewritten atomically),
``log.jsonl`` (losses, validation figures, learning rate, seconds), and ``final/`` (the EMA weights as a loadable
pipeline folder).
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from backend.bundle_io import read_shot_bundle
from backend.conditioning import ShotPasses, area_resize, batch_conditions, clip_conditions, shot_passes
from backend.models.frame_refiner import FrameRefiner, upsampled_frames
from backend.models.previs_dit import PRESETS, PrevisDiT
from backend.models.reference_encoder import ReferenceEncoder
from backend.quant import is_quantized_folder
from backend.training.dataset import list_shots
from backend.training.losses import training_loss


@dataclass
class TrainConfig:
    data: str
    out: str
    preset: str = "previs-tiny"
    steps: int = 4000
    batch_size: int = 4
    clip_frames: int = 16  # the pipeline's window_frames
    lr: float = 4e-4
    warmup: int = 100
    ema_decay: float = 0.998
    reference_dropout: float = 0.1
    reference_swap: float = 0.25  # share of samples scored outside an object that wears another's reference
    context_share: float = 0.5  # share of windows that start with clean context frames
    context_frames: int = 4  # the pipeline's context_frames
    shading_dropout: float = 0.15  # share of windows shown without their clay pass
    full_length_share: float = 0.6  # share of steps at clip_frames; the others draw a length in [1, clip_frames)
    refiner_width: int = 32
    refiner_blocks: int = 4
    refine_crop: int = 48  # refiner crop side at the working resolution
    refine_frames: int = 2  # frames of each window the refiner learns on
    full_resolution_share: float = 0.75  # share of refiner crops at the bundle's resolution (else working size)
    init_from: str | None = None  # a saved pipeline folder to fine-tune (used when the run has no checkpoint yet)
    val_every: int = 250
    log_every: int = 25
    seed: int = 0
    max_minutes: float | None = None  # stop (after saving) when a session's time budget runs out
    stop_at: int | None = None  # stop (after validating and saving) at this step; the schedule stays that of `steps`


@dataclass
class ShotExample:
    passes: ShotPasses
    target: torch.Tensor  # (F, 3, H, W) uint8 at the bundle's resolution
    frames: torch.Tensor  # (F, 3, h, w) in [-1, 1] at the working resolution


def load_shot(folder: Path, width: int, height: int) -> ShotExample:
    passes = shot_passes(read_shot_bundle(folder / "bundle"))
    passes.surface, passes.shading = passes.surface.half(), passes.shading.half()  # half the memory
    passes.object_ids = passes.object_ids.to(torch.int16)
    target = torch.from_numpy(np.load(folder / "target.npz")["frames"]).permute(0, 3, 1, 2).contiguous()
    return ShotExample(passes, target, area_resize(target.float() / 127.5 - 1.0, height, width))


def load_split(data: Path, split: str, size: tuple[int, int], loaded: dict[Path, ShotExample] | None = None
               ) -> dict[Path, ShotExample]:
    """Every finished shot of ``split``; shots already in ``loaded`` are kept as they are."""
    loaded = dict(loaded or {})
    for folder in list_shots(data, split):
        if folder not in loaded:
            loaded[folder] = load_shot(folder, *size)
    return loaded


def _crop_box(rng: np.random.Generator, height: int, width: int, side: int) -> tuple[int, int, int, int]:
    h, w = min(side, height), min(side, width)
    return int(rng.integers(height - h + 1)), int(rng.integers(width - w + 1)), h, w


def make_batch(examples: list[ShotExample], picks: list[tuple[int, int, int]], length: int, size: tuple[int, int],
               config: TrainConfig, rng: np.random.Generator, shading_off: list[bool] | None = None) -> dict:
    """The batch of windows ``picks`` = (example, start, context frames), all ``length`` frames long, with the
    refiner's crops (at the bundle's resolution when the examples have it and the draw says so)."""
    width, height = size
    full = examples[picks[0][0]].target.shape[-2:]
    scale = full[0] // height if full[0] % height == 0 and full[1] == width * (full[0] // height) else 1
    if scale > 1 and rng.uniform() >= config.full_resolution_share:
        scale = 1
    clips, frames, contexts, refine_frames = [], [], [], []
    for b, (i, start, context) in enumerate(picks):
        example = examples[i]
        clip = clip_conditions(example.passes, start, length, width, height, full_resolution=scale > 1)
        if shading_off is not None and shading_off[b]:
            clip.shading = torch.zeros_like(clip.shading)
            if clip.full_guidance is not None:
                clip.full_guidance[:, -clip.shading.shape[1]:] = 0
        clips.append(clip)
        frames.append(example.frames[start:start + length])
        context_input = torch.zeros(length, 4, height, width)
        context_input[:context, :3] = example.frames[start:start + context]
        context_input[:context, 3] = 1.0
        contexts.append(context_input)
        choices = np.arange(context, length)
        refine_frames.append(rng.choice(choices, config.refine_frames, replace=len(choices) < config.refine_frames))
    top, left, h, w = _crop_box(rng, height, width, config.refine_crop)
    index = torch.as_tensor(np.stack(refine_frames))  # (B, K)
    guidance, target = [], []
    for b, (i, start, _) in enumerate(picks):
        k = index[b]
        if scale > 1:
            box = (slice(top * scale, (top + h) * scale), slice(left * scale, (left + w) * scale))
            guidance.append(clips[b].full_guidance[k][..., box[0], box[1]])
            target.append(examples[i].target[start + k][..., box[0], box[1]].float() / 127.5 - 1.0)
        else:
            local = torch.cat([clips[b].guidance[:, :5], clips[b].shading], dim=1)
            guidance.append(local[k][..., top:top + h, left:left + w])
            target.append(frames[b][k][..., top:top + h, left:left + w])
        clips[b].full_guidance = None
    return {"frames": torch.stack(frames), **batch_conditions(clips), "context": torch.stack(contexts),
            "refine_frames": index, "refine_box": torch.tensor([top, left, h, w]),
            "refine_guidance": torch.stack(guidance), "refine_target": torch.stack(target)}


def random_batch(examples: list[ShotExample], config: TrainConfig, size: tuple[int, int],
                 rng: np.random.Generator) -> dict:
    indices = rng.integers(len(examples), size=config.batch_size)
    shortest = min(examples[i].frames.shape[0] for i in indices)
    full_length = rng.uniform() < config.full_length_share
    length = config.clip_frames if full_length else int(rng.integers(1, config.clip_frames))
    length = min(length, shortest)
    picks = []
    for i in indices:
        start = int(rng.integers(examples[i].frames.shape[0] - length + 1))
        with_context = length > config.context_frames and rng.uniform() < config.context_share
        context = config.context_frames if with_context else 0
        picks.append((int(i), start, context))
    shading_off = [bool(rng.uniform() < config.shading_dropout) for _ in picks]
    return make_batch(examples, picks, length, size, config, rng, shading_off)


@torch.no_grad()
def validation_figures(model, encoder, refiner, examples: list[ShotExample], config: TrainConfig,
                       size: tuple[int, int]) -> dict:
    """Comparable across a run: the loss on every held-out shot's first window with fixed noise and timesteps, and
    the PSNR against the target of the clean frames predicted at sigma 0.25 (a sampler's last step), refined at
    the bundle's resolution and, for comparison, upsampled bilinearly."""
    generator = torch.Generator().manual_seed(1234)
    rng = np.random.default_rng(1234)
    losses, refined, upsampled = [], [], []
    for i in range(len(examples)):
        length = min(config.clip_frames, examples[i].frames.shape[0])
        batch = make_batch(examples, [(i, 0, 0)], length, size, config, rng)
        losses.append(training_loss(model, encoder, batch, reference_dropout=0.0, generator=generator).item())
        clip = clip_conditions(examples[i].passes, 0, 2, *size, full_resolution=True)
        inputs = batch_conditions([clip])
        frames = examples[i].frames[None, :2]
        noise = torch.randn(frames.shape, generator=generator)
        noisy = 0.75 * frames + 0.25 * noise
        tokens = (encoder(inputs["references"].flatten(0, 1)).unflatten(0, inputs["references"].shape[:2])
                  if inputs["references"] is not None else None)
        clean = model(noisy, torch.tensor([250.0]), inputs["guidance"], tokens, inputs["object_masks"],
                      inputs["reference_strengths"], inputs["shading"])[0]
        target = examples[i].target[:2].float() / 127.5 - 1.0
        bilinear = upsampled_frames(clean, inputs["full_guidance"][0], model.paints_albedo)
        for out, store in ((refiner(clean, inputs["full_guidance"][0]), refined), (bilinear, upsampled)):
            mse = (((out.clamp(-1, 1) - target) / 2) ** 2).mean().item()
            store.append(10 * math.log10(1 / max(mse, 1e-10)))
    return {"val_loss": float(np.mean(losses)), "val_psnr_refined": float(np.mean(refined)),
            "val_psnr_upsampled": float(np.mean(upsampled))}


def widened_from(start: PrevisDiT, preset: str) -> PrevisDiT:
    """``start`` with the clay and context inputs of ``preset`` added (zero weights: it behaves exactly as before)
    and its prediction type, so a model trained without them is fine-tuned instead of trained again (a model that
    painted frames learns to paint albedo from its own weights)."""
    wanted = {k: PRESETS[preset][k] for k in ("shading_channels", "context_channels", "prediction_type")}
    if all(start.config[k] == v for k, v in wanted.items()):
        return start
    model = PrevisDiT(**{**dict(start.config), **wanted})
    state = start.state_dict()
    weight = state["patch_embed.weight"]
    grown = torch.zeros_like(model.patch_embed.weight)
    grown[:, :weight.shape[1]] = weight
    state["patch_embed.weight"] = grown
    model.load_state_dict(state)
    return model


def refiner_following(refiner: FrameRefiner, albedo: bool) -> FrameRefiner:
    """A fine-tuned refiner follows its DiT's prediction type. Converted, it keeps its features but its output layer
    starts again at zero, as a new refiner's does: its residual was learned for the other mode (a frame refiner's
    residual lights the albedo, which the albedo mode's exact product with the clay pass would light twice), so it
    starts as the bilinear upsampling of that mode (``upsampled_frames``)."""
    if refiner.config.albedo == albedo:
        return refiner
    state = refiner.state_dict()
    shape = refiner.config  # (from_config would keep a default a folder's config.json lacked: albedo)
    converted = FrameRefiner(guidance_channels=shape.guidance_channels, width=shape.width,
                             num_blocks=shape.num_blocks, albedo=albedo)
    state["conv_out.weight"], state["conv_out.bias"] = converted.conv_out.weight, converted.conv_out.bias
    converted.load_state_dict(state)
    return converted


def learning_rate(step: int, config: TrainConfig) -> float:
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(config: TrainConfig, progress=print) -> Path:
    from backend.pipelines.previs_pipeline import PrevisPipeline

    if not 0 <= config.context_frames < config.clip_frames:
        raise ValueError(f"context frames ({config.context_frames}) must be fewer than the clip's "
                         f"{config.clip_frames} frames")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    checkpoint_path = out / "checkpoint.pt"
    sampling = {}
    refiner = None
    if config.init_from is not None:
        if is_quantized_folder(Path(config.init_from) / "transformer"):
            raise ValueError(f"{config.init_from} holds quantized weights; fine-tune the full-precision model")
        start = PrevisPipeline.from_pretrained(config.init_from)
        model, encoder, sampling, refiner = widened_from(start.transformer, config.preset), \
            start.reference_encoder, start.sampling, start.refiner
        if not checkpoint_path.exists():
            progress(f"fine-tuning {config.init_from}")
    else:
        model = PrevisDiT.from_preset(config.preset)
        encoder = ReferenceEncoder(reference_dim=model.config.reference_dim)
    albedo = model.paints_albedo
    refiner = refiner or FrameRefiner(width=config.refiner_width, num_blocks=config.refiner_blocks, albedo=albedo)
    refiner = refiner_following(refiner, albedo)
    sampling = {**sampling, "window_frames": config.clip_frames, "context_frames": config.context_frames}
    ema_model, ema_encoder, ema_refiner = (copy.deepcopy(m).eval() for m in (model, encoder, refiner))
    params = list(model.parameters()) + list(encoder.parameters()) + list(refiner.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    rng = np.random.default_rng(config.seed)
    step, elapsed = 0, 0.0

    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, weights_only=False)
        if config.init_from is None and state["config"]["preset"] != config.preset:
            raise ValueError(f"{checkpoint_path} was trained with preset {state['config']['preset']!r}, "
                             f"not {config.preset!r}")
        for name, module in (("model", model), ("encoder", encoder), ("refiner", refiner), ("ema_model", ema_model),
                             ("ema_encoder", ema_encoder), ("ema_refiner", ema_refiner)):
            module.load_state_dict(state[name])
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        step, elapsed = state["step"], state["elapsed"]
        progress(f"resumed from step {step} ({elapsed / 60:.1f} min trained)")

    height, width = model.config.sample_size
    size = (width, height)
    data = Path(config.data)
    train_shots, heldout_shots = load_split(data, "train", size), load_split(data, "heldout", size)
    train_set, heldout_set = list(train_shots.values()), list(heldout_shots.values())
    progress(f"{len(train_set)} training shots, {len(heldout_set)} held-out shots, "
             f"{sum(p.numel() for p in params) / 1e6:.2f} M parameters")

    def save(final: bool = False):
        save_checkpoint(checkpoint_path, {
            "config": asdict(config), "step": step, "elapsed": elapsed, "rng": rng.bit_generator.state,
            "model": model.state_dict(), "encoder": encoder.state_dict(), "refiner": refiner.state_dict(),
            "ema_model": ema_model.state_dict(), "ema_encoder": ema_encoder.state_dict(),
            "ema_refiner": ema_refiner.state_dict(), "optimizer": optimizer.state_dict(),
        })
        if final:
            PrevisPipeline(ema_model, ema_encoder, sampling=sampling, refiner=ema_refiner).save_pretrained(
                out / "final")

    log = open(out / "log.jsonl", "a")
    session_start = time.perf_counter()
    for module in (model, encoder, refiner):
        module.train()
    while step < config.steps:
        started = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        loss, refine = training_loss(model, encoder, random_batch(train_set, config, size, rng),
                                     reference_dropout=config.reference_dropout,
                                     reference_swap=config.reference_swap, refiner=refiner)
        optimizer.zero_grad(set_to_none=True)
        (loss + refine).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        with torch.no_grad():
            decay = min(config.ema_decay, (1 + step) / (10 + step))
            for ema, live in ((ema_model, model), (ema_encoder, encoder), (ema_refiner, refiner)):
                for e, p in zip(ema.parameters(), live.parameters(), strict=True):
                    e.lerp_(p, 1 - decay)
        step += 1
        elapsed += time.perf_counter() - started
        record = {"step": step, "loss": loss.item(), "refiner_loss": refine.item(),
                  "lr": optimizer.param_groups[0]["lr"], "seconds": elapsed}
        stop_here = step == config.stop_at and step < config.steps
        if step % config.val_every == 0 or step == config.steps or stop_here:
            record.update(validation_figures(ema_model, ema_encoder, ema_refiner, heldout_set, config, size))
            save()
            train_shots = load_split(data, "train", size, train_shots)
            if len(train_shots) > len(train_set):
                progress(f"{len(train_shots) - len(train_set)} new training shots")
                train_set = list(train_shots.values())
            record["train_shots"] = len(train_set)
        if step % config.log_every == 0 or "val_loss" in record:
            log.write(json.dumps(record) + "\n")
            log.flush()
            progress(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        out_of_time = config.max_minutes is not None and time.perf_counter() - session_start > config.max_minutes * 60
        if out_of_time and step < config.steps:
            progress(f"time budget of {config.max_minutes} min reached at step {step}; resume with the same command")
            break
        if stop_here:
            progress(f"stopped at step {step} as asked; resume without --stop-at to go on to step {config.steps}")
            break
    save(final=True)
    log.close()
    return out / "final"
