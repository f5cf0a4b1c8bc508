"""``cinepregen train``: fit the previs model on a procedural dataset, resumable, with EMA and validation.

nanoGPT-style: one config dataclass, one loop. The whole dataset (a few hundred 16-frame 128x72 shots) is
conditioned once and kept in memory; each step draws random shots and a random window of frames, so the model
sees clips of many lengths' worth of positions while a step stays cheap on a CPU.

Outputs in ``--out``: ``checkpoint.pt`` (model, EMA, optimiser, step, RNG; rewritten atomically), ``log.jsonl``
(loss, validation loss, learning rate, seconds), and ``final/`` (the EMA weights as a loadable pipeline folder).
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

from backend.conditioning import area_resize, batch_conditions, shot_conditions
from backend.models.previs_dit import PrevisDiT
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
    clip_frames: int = 8
    lr: float = 4e-4
    warmup: int = 100
    ema_decay: float = 0.998
    reference_dropout: float = 0.1
    reference_swap: float = 0.25  # share of samples scored outside an object that wears another's reference
    init_from: str | None = None  # a saved pipeline folder to fine-tune (used when the run has no checkpoint yet)
    val_every: int = 250
    log_every: int = 25
    seed: int = 0
    max_minutes: float | None = None  # stop (after saving) when a session's time budget runs out
    stop_at: int | None = None  # stop (after validating and saving) at this step; the schedule stays that of `steps`


@dataclass
class ShotExample:
    frames: torch.Tensor  # (F, 3, h, w) in [-1, 1]
    conditions: object  # backend.conditioning.ShotConditions


def load_split(data: Path, split: str, model: PrevisDiT) -> list[ShotExample]:
    from cinepregen_addon.core.shot_bundle import read_bundle

    examples = []
    for folder in list_shots(data, split):
        bundle = read_bundle(folder / "bundle")
        conditions = shot_conditions(bundle, model.config.patch_size, model.max_tokens_per_frame)
        target = np.load(folder / "target.npz")["frames"]  # (F, H, W, 3) uint8
        frames = torch.from_numpy(target).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        frames = area_resize(frames, *conditions.guidance.shape[-2:])
        examples.append(ShotExample(frames, conditions))
    return examples


def window(example: ShotExample, start: int, length: int) -> tuple[torch.Tensor, object]:
    """The clip and its conditions restricted to frames [start, start + length)."""
    c = example.conditions
    clipped = copy.copy(c)
    clipped.guidance = c.guidance[start:start + length]
    clipped.object_masks = c.object_masks[:, start:start + length]
    return example.frames[start:start + length], clipped


def make_batch(examples: list[ShotExample], indices, starts, length: int) -> dict:
    frames, conditions = zip(*(window(examples[i], s, length) for i, s in zip(indices, starts, strict=True)),
                             strict=True)
    return {"frames": torch.stack(frames), **batch_conditions(conditions)}


def random_batch(examples: list[ShotExample], config: TrainConfig, rng: np.random.Generator) -> dict:
    indices = rng.integers(len(examples), size=config.batch_size)
    starts = [int(rng.integers(examples[i].frames.shape[0] - config.clip_frames + 1)) for i in indices]
    return make_batch(examples, indices, starts, config.clip_frames)


@torch.no_grad()
def validation_loss(model, encoder, examples: list[ShotExample], config: TrainConfig) -> float:
    """Loss on every held-out shot with fixed noise and timesteps, so values are comparable across the run."""
    generator = torch.Generator().manual_seed(1234)
    losses = []
    for i in range(len(examples)):
        batch = make_batch(examples, [i], [0], config.clip_frames)
        losses.append(training_loss(model, encoder, batch, reference_dropout=0.0, generator=generator).item())
    return float(np.mean(losses))


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

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    checkpoint_path = out / "checkpoint.pt"
    sampling = {}
    if config.init_from is not None:
        if is_quantized_folder(Path(config.init_from) / "transformer"):
            raise ValueError(f"{config.init_from} holds quantized weights; fine-tune the full-precision model")
        start = PrevisPipeline.from_pretrained(config.init_from)
        model, encoder, sampling = start.transformer, start.reference_encoder, start.sampling
        if not checkpoint_path.exists():
            progress(f"fine-tuning {config.init_from}")
    else:
        model = PrevisDiT.from_preset(config.preset)
        encoder = ReferenceEncoder(reference_dim=model.config.reference_dim)
    ema_model, ema_encoder = copy.deepcopy(model).eval(), copy.deepcopy(encoder).eval()
    params = list(model.parameters()) + list(encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    rng = np.random.default_rng(config.seed)
    step, elapsed = 0, 0.0

    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, weights_only=False)
        if config.init_from is None and state["config"]["preset"] != config.preset:
            raise ValueError(f"{checkpoint_path} was trained with preset {state['config']['preset']!r}, "
                             f"not {config.preset!r}")
        model.load_state_dict(state["model"])
        encoder.load_state_dict(state["encoder"])
        ema_model.load_state_dict(state["ema_model"])
        ema_encoder.load_state_dict(state["ema_encoder"])
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        step, elapsed = state["step"], state["elapsed"]
        progress(f"resumed from step {step} ({elapsed / 60:.1f} min trained)")

    train_set = load_split(Path(config.data), "train", model)
    heldout_set = load_split(Path(config.data), "heldout", model)
    progress(f"{len(train_set)} training shots, {len(heldout_set)} held-out shots, "
             f"{sum(p.numel() for p in params) / 1e6:.2f} M parameters")

    def save(final: bool = False):
        save_checkpoint(checkpoint_path, {
            "config": asdict(config), "step": step, "elapsed": elapsed, "rng": rng.bit_generator.state,
            "model": model.state_dict(), "encoder": encoder.state_dict(), "ema_model": ema_model.state_dict(),
            "ema_encoder": ema_encoder.state_dict(), "optimizer": optimizer.state_dict(),
        })
        if final:
            PrevisPipeline(ema_model, ema_encoder, sampling=sampling).save_pretrained(out / "final")

    log = open(out / "log.jsonl", "a")
    session_start = time.perf_counter()
    model.train()
    encoder.train()
    while step < config.steps:
        started = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        loss = training_loss(model, encoder, random_batch(train_set, config, rng),
                             reference_dropout=config.reference_dropout, reference_swap=config.reference_swap)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        with torch.no_grad():
            decay = min(config.ema_decay, (1 + step) / (10 + step))
            for ema, live in ((ema_model, model), (ema_encoder, encoder)):
                for e, p in zip(ema.parameters(), live.parameters(), strict=True):
                    e.lerp_(p, 1 - decay)
        step += 1
        elapsed += time.perf_counter() - started
        record = {"step": step, "loss": loss.item(), "lr": optimizer.param_groups[0]["lr"], "seconds": elapsed}
        stop_here = step == config.stop_at and step < config.steps
        if step % config.val_every == 0 or step == config.steps or stop_here:
            record["val_loss"] = validation_loss(ema_model, ema_encoder, heldout_set, config)
            save()
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
