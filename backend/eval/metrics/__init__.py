"""Evaluation metrics for generated previs clips, with ground truth taken from the engine's guidance passes.

No pretrained network is involved: temporal consistency uses the exact flow implied by depth and cameras (plus
Blender's vector pass for objects that move), fidelity compares against a target render, reference binding
compares generated clips with each other, and structure compares generated edges with ID/depth discontinuities.

Array conventions: images and clips are float in [0, 1], (H, W, 3) or (F, H, W, 3); pixel (u, v) is column u,
row v, the centre of the pixel; flow is (H, W, 2) in pixels, (du, dv), from a frame to the next one.
"""

from backend.eval.metrics.binding import binding_accuracy, change_ratio, mean_colour, relative_colours
from backend.eval.metrics.fidelity import psnr, ssim, ssim_map
from backend.eval.metrics.flow import (
    flow_to_next_from_vector_pass,
    ground_truth_flow,
    temporal_warping_error,
    warp_backward,
    warping_error,
)
from backend.eval.metrics.structure import (
    colour_drift,
    edge_f_score,
    guidance_edges,
    image_edges,
    patch_grid_ratio,
)

__all__ = [
    "binding_accuracy", "change_ratio", "colour_drift", "edge_f_score", "flow_to_next_from_vector_pass",
    "ground_truth_flow", "guidance_edges", "image_edges", "mean_colour", "patch_grid_ratio", "psnr",
    "relative_colours", "ssim", "ssim_map", "temporal_warping_error", "warp_backward", "warping_error",
]
