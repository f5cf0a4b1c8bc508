"""Temporal consistency: the exact flow between frames from the engine's depth, cameras and vector pass, and
the warping error of a clip along it."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from cinepregen_addon.core.camera_geometry import flow_from_depth, project_points, unproject_depth


def flow_to_next_from_vector_pass(vector: np.ndarray) -> np.ndarray:
    """Flow (du, dv) in image pixels to the next frame, from Blender's 4-channel vector pass.

    The one place that states the convention. Cycles writes, per pixel, ``(pre - centre, centre - post)`` in raster
    coordinates whose y axis points up, while the bundle stores images top row first; so the motion to the next
    frame is ``(-ch2, +ch3)`` with v pointing down. Checked on a Cycles render (bpy 5.0.1, camera trucking right,
    one prop moving right and up): on static surfaces this matched the flow from depth and cameras to 1e-3 px, and
    the moving prop came out with a larger u and a negative v. Channels 0-1 (motion to the previous frame) are
    not used.
    """
    vector = np.asarray(vector, dtype=np.float64)
    if vector.ndim != 3 or vector.shape[-1] != 4:
        raise ValueError(f"vector pass must be (H, W, 4), got {vector.shape}")
    return np.stack([-vector[..., 2], vector[..., 3]], axis=-1)




def warp_backward(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``image`` bilinearly at ``p + flow(p)`` for every pixel p.

    Returns the warped image and a bool mask of pixels whose sample point lies inside the image (for those,
    all four bilinear taps are real pixels).
    """
    image = np.asarray(image, dtype=np.float64)
    squeeze = image.ndim == 2
    if squeeze:
        image = image[..., None]
    height, width = image.shape[:2]
    if flow.shape != (height, width, 2) or min(height, width) < 2:
        raise ValueError(f"flow must be (H, W, 2) = {(height, width, 2)} with H, W >= 2, got {flow.shape}")
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    x = cols + flow[..., 0]
    y = rows + flow[..., 1]
    inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
    x = np.clip(x, 0, width - 1)
    y = np.clip(y, 0, height - 1)
    x0 = np.minimum(np.floor(x), width - 2).astype(np.int64)
    y0 = np.minimum(np.floor(y), height - 2).astype(np.int64)
    x1, y1 = x0 + 1, y0 + 1
    wx = (x - x0)[..., None]
    wy = (y - y0)[..., None]
    top = image[y0, x0] * (1 - wx) + image[y0, x1] * wx
    bottom = image[y1, x0] * (1 - wx) + image[y1, x1] * wx
    warped = top * (1 - wy) + bottom * wy
    return (warped[..., 0] if squeeze else warped), inside


def ground_truth_flow(
    depth0: np.ndarray,
    depth1: np.ndarray,
    object_id0: np.ndarray,
    object_id1: np.ndarray,
    K0: np.ndarray,
    world_to_camera0: np.ndarray,
    K1: np.ndarray,
    world_to_camera1: np.ndarray,
    vector0: np.ndarray | None = None,
    depth_rel_tol: float = 0.03,
    motion_tol_px: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Flow from frame 0 to frame 1 and the mask of pixels where it is trustworthy (visible in both frames).

    Static geometry moves by the flow implied by depth and the two cameras. Where the vector pass is given and an
    object's pixel disagrees with that camera-induced flow by more than ``motion_tol_px``, the object moved, and
    the vector pass is used there instead. Occlusions are masked out: a static pixel is kept only when its
    reprojected depth matches frame 1's depth at the landing point within ``depth_rel_tol`` (relative); a moving
    pixel (whose reprojected depth is unknown) only when it lands on the same object. Every pixel must also land
    inside frame 1, on the same object ID, and not be background (depth 0).
    """
    flow, in_view = flow_from_depth(depth0, K0, world_to_camera0, K1, world_to_camera1)
    flow = np.array(flow, dtype=np.float64)
    moving = np.zeros(depth0.shape, dtype=bool)
    if vector0 is not None and np.any(vector0):
        vector_flow = flow_to_next_from_vector_pass(vector0)
        disagreement = np.linalg.norm(vector_flow - flow, axis=-1)
        moving = (object_id0 > 0) & (depth0 > 0) & (disagreement > motion_tol_px)
        flow[moving] = vector_flow[moving]

    depth1_at_landing, inside = warp_backward(depth1, flow)
    rows, cols = np.mgrid[0 : depth0.shape[0], 0 : depth0.shape[1]]
    land_u = np.clip(np.rint(cols + flow[..., 0]), 0, depth0.shape[1] - 1).astype(np.int64)
    land_v = np.clip(np.rint(rows + flow[..., 1]), 0, depth0.shape[0] - 1).astype(np.int64)
    same_object = object_id1[land_v, land_u] == object_id0

    points = unproject_depth(K0, world_to_camera0, depth0).reshape(-1, 3)
    _, predicted_depth1 = project_points(K1, world_to_camera1, points)
    predicted_depth1 = predicted_depth1.reshape(depth0.shape)
    depth_agrees = np.abs(depth1_at_landing - predicted_depth1) <= depth_rel_tol * np.abs(predicted_depth1)

    valid = (depth0 > 0) & inside & same_object & np.where(moving, True, in_view & depth_agrees)
    return flow, valid


def warping_error(frame0: np.ndarray, frame1: np.ndarray, flow: np.ndarray, valid: np.ndarray) -> float:
    """Mean absolute colour difference between frame 0 and frame 1 warped back along ``flow``, over valid pixels.

    In [0, 1] colour units; nan when no pixel is valid.
    """
    warped, inside = warp_backward(frame1, flow)
    keep = valid & inside
    if not keep.any():
        return math.nan
    return float(np.abs(np.asarray(frame0, dtype=np.float64) - warped)[keep].mean())


def temporal_warping_error(
    frames: np.ndarray,
    depths: Sequence[np.ndarray],
    object_ids: Sequence[np.ndarray],
    Ks: Sequence[np.ndarray],
    world_to_cameras: Sequence[np.ndarray],
    vectors: Sequence[np.ndarray] | None = None,
    depth_rel_tol: float = 0.03,
) -> dict:
    """Warping error of every consecutive frame pair of a clip, against the engine's ground-truth flow.

    Returns ``mean`` (over pairs, nan-free), ``per_pair`` and ``valid_fraction`` (mean share of pixels scored).
    ``vectors`` should only be passed when consecutive clip frames are consecutive Blender frames, because the
    vector pass describes motion to the next Blender frame.
    """
    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim != 4 or len(frames) != len(depths):
        raise ValueError(f"frames must be (F, H, W, 3) with one depth per frame, got {frames.shape} and {len(depths)}")
    per_pair, fractions = [], []
    for i in range(len(frames) - 1):
        flow, valid = ground_truth_flow(
            depths[i], depths[i + 1], object_ids[i], object_ids[i + 1],
            Ks[i], world_to_cameras[i], Ks[i + 1], world_to_cameras[i + 1],
            vector0=None if vectors is None else vectors[i], depth_rel_tol=depth_rel_tol,
        )  # fmt: skip
        per_pair.append(warping_error(frames[i], frames[i + 1], flow, valid))
        fractions.append(float(valid.mean()))
    scored = [e for e in per_pair if not math.isnan(e)]
    return {
        "mean": float(np.mean(scored)) if scored else math.nan,
        "per_pair": per_pair,
        "valid_fraction": float(np.mean(fractions)) if fractions else 0.0,
    }
