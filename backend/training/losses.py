"""Training objective of the previs model: rectified flow (flow matching) with reference dropout and swaps.

x_t = (1 - s) * x_0 + s * noise, s ~ logit-normal (Esser et al. 2024, SD3), and the loss is the MSE of the velocity
``noise - x_0``, whichever the model outputs (clean frames are turned into a velocity first: the "x-prediction,
v-loss" of Li & He 2025). This is the convention of diffusers' ``FlowMatchEulerDiscreteScheduler``
(timestep = s * 1000), which the sampling pipeline uses, so a trained model samples with plain Euler steps.

Reference swaps are counterfactual examples for the masked references: one object of a sample wears another
sample's reference, and the loss covers only the pixels outside that object, whose target does not depend on what
the object wears. That teaches directly what the leakage figure of ``cinepregen eval`` measures: a change of one
object's reference must not change the rest of the frame (masking the attention alone cannot stop later layers
from carrying the change outside).

Context frames (the clean frames a window of a long shot starts with) are inputs, not targets: their pixels weigh
0. The frame refiner learns on the DiT's own clean-frame (or albedo) predictions of the same call (detached, so the
refiner cannot pull the DiT), on crops, where the noise level is low enough for that prediction to look like a sample's
last step: at the bundle's resolution it must give the Cycles target, the MSE of :func:`refiner_loss`.
"""

from __future__ import annotations

import torch

from backend.models.frame_refiner import FrameRefiner
from backend.models.previs_dit import PrevisDiT, velocity_from_output
from backend.models.reference_encoder import ReferenceEncoder

REFINER_MAX_SIGMA = 0.5  # the refiner learns from predictions at noise levels up to this (sampling ends near 0.25)


def training_loss(model: PrevisDiT, reference_encoder: ReferenceEncoder, batch: dict, *,
                  reference_dropout: float = 0.1, reference_swap: float = 0.0,
                  generator: torch.Generator | None = None, refiner: FrameRefiner | None = None
                  ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Flow-matching MSE on one batch (and, with ``refiner``, the refiner's loss as a second value).

    ``batch``: ``frames`` (B, F, 3, H, W) target clips in [-1, 1], plus the keys of
    :func:`backend.conditioning.batch_conditions` (``guidance``, ``shading``, ``references``, ``object_masks``,
    ``reference_strengths``), optionally ``context`` (B, F, 4, H, W: clean context frames and their flag) and, for
    the refiner, the keys of :func:`refiner_loss`. With probability ``reference_dropout`` all of a sample's
    references are dropped (strength 0, bit-for-bit the unconditional branch), which is what classifier-free
    guidance over references needs at sampling time. With probability ``reference_swap`` a sample has one
    referenced object's reference replaced by another one of the batch and is scored outside that object only (see
    the module docstring). Both the model and the reference encoder receive gradients.
    """
    frames = batch["frames"]
    batch_size, device = frames.shape[0], frames.device
    noise = torch.randn(frames.shape, generator=generator, device=device, dtype=frames.dtype)
    sigma = torch.sigmoid(torch.randn(batch_size, generator=generator, device=device)).to(frames.dtype)
    s = sigma[:, None, None, None, None]
    noisy = (1 - s) * frames + s * noise

    tokens, strengths = None, None
    pixel_weights = torch.ones(batch_size, frames.shape[1], 1, *frames.shape[-2:], device=device, dtype=frames.dtype)
    if batch.get("references") is not None:
        references = batch["references"]
        n_obj = references.shape[1]
        if reference_swap > 0:
            references, pixel_weights = swap_references(batch, reference_swap, generator)
        tokens = reference_encoder(references.flatten(0, 1)).unflatten(0, (batch_size, n_obj))
        keep = (torch.rand(batch_size, generator=generator, device=device) >= reference_dropout).to(frames.dtype)
        strengths = batch["reference_strengths"] * keep[:, None]
    context = batch.get("context")
    if context is not None:
        pixel_weights = pixel_weights * (1 - context[:, :, 3:4])  # context frames are inputs, not targets
    output = model(noisy, sigma * 1000, batch["guidance"], tokens, batch.get("object_masks"), strengths,
                   batch.get("shading"), context)
    velocity = velocity_from_output(model, output, noisy, sigma, batch.get("shading"))
    squared_error = (velocity.float() - (noise - frames).float()) ** 2
    loss = (squared_error * pixel_weights).sum() / (pixel_weights.sum().clamp(min=1) * frames.shape[2])
    if refiner is None:
        return loss
    # the clean frames (or albedo) this call predicts, in the terms the refiner reads
    clean = (noisy - s * velocity if model.config.prediction_type == "velocity" else output).detach()
    return loss, refiner_loss(refiner, clean, sigma, batch)


def refiner_loss(refiner: FrameRefiner, clean: torch.Tensor, sigma: torch.Tensor, batch: dict) -> torch.Tensor:
    """MSE of the refined crops against the full-resolution target, over samples with sigma <= REFINER_MAX_SIGMA.

    ``batch`` holds ``refine_frames`` (B, K) frame indices of each sample, ``refine_box`` (4,) the crop (top, left,
    height, width) at the working resolution, ``refine_guidance`` (B, K, C, h * s, w * s) and ``refine_target``
    (B, K, 3, h * s, w * s) in [-1, 1]: the same crops at the bundle's resolution (s = 1 or 2).
    """
    chosen = (sigma <= REFINER_MAX_SIGMA).nonzero().flatten()
    if len(chosen) == 0:
        return clean.new_zeros(())
    top, left, height, width = (int(v) for v in batch["refine_box"])
    index = batch["refine_frames"][chosen]  # (b, K)
    crops = clean[chosen[:, None], index][..., top:top + height, left:left + width]  # (b, K, 3, h, w)
    guidance = batch["refine_guidance"][chosen].flatten(0, 1)
    refined = refiner(crops.flatten(0, 1), guidance)
    return ((refined.float() - batch["refine_target"][chosen].flatten(0, 1).float()) ** 2).mean()


def swap_references(batch: dict, probability: float,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """References with swaps, and per-pixel loss weights (B, F, 1, h, w): 0 on a swapped object, 1 elsewhere.

    Each sample, with ``probability``, picks one of its referenced objects and gives it a reference drawn from the
    batch's other referenced objects; its weights keep only the pixels the object does not cover.
    """
    references, masks, strengths = batch["references"], batch["object_masks"], batch["reference_strengths"]
    batch_size, n_obj = strengths.shape
    swapped = references.clone()
    weights = torch.ones(batch_size, masks.shape[2], 1, *masks.shape[-2:], dtype=masks.dtype)
    pool = strengths.flatten().nonzero().flatten()  # flat (sample, object) indices of every referenced object
    for b in range(batch_size):
        own = strengths[b].nonzero().flatten()
        if len(own) == 0 or len(pool) < 2 or torch.rand((), generator=generator) >= probability:
            continue
        obj = int(own[torch.randint(len(own), (), generator=generator)])
        donors = pool[pool != b * n_obj + obj]
        donor = int(donors[torch.randint(len(donors), (), generator=generator)])
        swapped[b, obj] = references[donor // n_obj, donor % n_obj]
        weights[b, :, 0] = 1.0 - masks[b, obj]
    return swapped, weights.to(references.device)
