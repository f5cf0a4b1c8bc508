"""Training objective of the previs model: rectified flow (flow matching) with reference dropout.

x_t = (1 - s) * x_0 + s * noise, s ~ logit-normal (Esser et al. 2024, SD3), and the loss is the MSE of the velocity
``noise - x_0``, whichever the model outputs (clean frames are turned into a velocity first: the "x-prediction,
v-loss" of Li & He 2025). This is the convention of diffusers' ``FlowMatchEulerDiscreteScheduler``
(timestep = s * 1000), which the sampling pipeline uses, so a trained model samples with plain Euler steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from backend.models.previs_dit import PrevisDiT, velocity_from_output
from backend.models.reference_encoder import ReferenceEncoder


def training_loss(model: PrevisDiT, reference_encoder: ReferenceEncoder, batch: dict, *,
                  reference_dropout: float = 0.1, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flow-matching MSE on one batch.

    ``batch``: ``frames`` (B, F, 3, H, W) target clips in [-1, 1], plus the keys of
    :func:`backend.conditioning.batch_conditions` (``guidance``, ``references``, ``object_masks``,
    ``reference_strengths``). With probability ``reference_dropout`` all of a sample's references are dropped
    (strength 0, bit-for-bit the unconditional branch), which is what classifier-free guidance over references
    needs at sampling time. Both the model and the reference encoder receive gradients.
    """
    frames = batch["frames"]
    batch_size, device = frames.shape[0], frames.device
    noise = torch.randn(frames.shape, generator=generator, device=device, dtype=frames.dtype)
    sigma = torch.sigmoid(torch.randn(batch_size, generator=generator, device=device)).to(frames.dtype)
    s = sigma[:, None, None, None, None]
    noisy = (1 - s) * frames + s * noise

    tokens, strengths = None, None
    if batch.get("references") is not None:
        n_obj = batch["references"].shape[1]
        tokens = reference_encoder(batch["references"].flatten(0, 1)).unflatten(0, (batch_size, n_obj))
        keep = (torch.rand(batch_size, generator=generator, device=device) >= reference_dropout).to(frames.dtype)
        strengths = batch["reference_strengths"] * keep[:, None]
    output = model(noisy, sigma * 1000, batch["guidance"], tokens, batch.get("object_masks"), strengths)
    velocity = velocity_from_output(model, output, noisy, sigma)
    return F.mse_loss(velocity.float(), (noise - frames).float())
