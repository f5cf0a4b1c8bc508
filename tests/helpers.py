"""Small real models shared by several test modules (pytest puts ``tests/`` on ``sys.path``)."""

import torch

from backend.models.previs_dit import PrevisDiT
from backend.models.reference_encoder import ReferenceEncoder
from backend.pipelines.previs_pipeline import PrevisPipeline


def tiny_pipeline(sample_size: tuple[int, int] = (32, 64)) -> PrevisPipeline:
    """An untrained one-block previs pipeline with seeded random weights: fast, deterministic, real code paths."""
    torch.manual_seed(0)
    transformer = PrevisDiT.from_preset("tiny-test", sample_size=sample_size)
    encoder = ReferenceEncoder(reference_dim=32, width=16, num_heads=2)
    for p in transformer.parameters():
        p.data.normal_(0, 0.05)
    return PrevisPipeline(transformer, encoder, sampling={"num_inference_steps": 2, "reference_guidance_scale": 2.0})
