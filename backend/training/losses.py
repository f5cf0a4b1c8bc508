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
"""

from __future__ import annotations

import torch

from backend.models.previs_dit import PrevisDiT, velocity_from_output
from backend.models.reference_encoder import ReferenceEncoder


def training_loss(model: PrevisDiT, reference_encoder: ReferenceEncoder, batch: dict, *,
                  reference_dropout: float = 0.1, reference_swap: float = 0.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Flow-matching MSE on one batch.

    ``batch``: ``frames`` (B, F, 3, H, W) target clips in [-1, 1], plus the keys of
    :func:`backend.conditioning.batch_conditions` (``guidance``, ``references``, ``object_masks``,
    ``reference_strengths``). With probability ``reference_dropout`` all of a sample's references are dropped
    (strength 0, bit-for-bit the unconditional branch), which is what classifier-free guidance over references
    needs at sampling time. With probability ``reference_swap`` a sample has one referenced object's reference
    replaced by another one of the batch and is scored outside that object only (see the module docstring).
    Both the model and the reference encoder receive gradients.
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
    output = model(noisy, sigma * 1000, batch["guidance"], tokens, batch.get("object_masks"), strengths)
    velocity = velocity_from_output(model, output, noisy, sigma)
    squared_error = (velocity.float() - (noise - frames).float()) ** 2
    return (squared_error * pixel_weights).sum() / (pixel_weights.sum() * frames.shape[2])


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
