"""Evaluation metrics for generated previs clips, with ground truth taken from the engine's guidance passes.

No pretrained network is involved: temporal consistency uses the exact flow implied by depth and cameras (plus
Blender's vector pass for objects that move), fidelity compares against a target render, reference binding
compares generated clips with each other, and structure compares generated edges with ID/depth discontinuities.

Array conventions: images and clips are float in [0, 1], (H, W, 3) or (F, H, W, 3); pixel (u, v) is column u,
row v, the centre of the pixel; flow is (H, W, 2) in pixels, (du, dv), from a frame to the next one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from cinepregen_addon.core.camera_geometry import flow_from_depth, project_points, unproject_depth

LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])


# ----------------------------------------------------------------------------------------------------------------
# Blender's vector pass
# ----------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------
# Warping and temporal consistency
# ----------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------
# Fidelity to a target render
# ----------------------------------------------------------------------------------------------------------------


def _masked_mean(values: np.ndarray, mask: np.ndarray | None) -> float:
    """Mean of ``values`` over the pixels in ``mask`` (all when None; nan when the mask is empty)."""
    if mask is None:
        return float(values.mean())
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != values.shape[: mask.ndim]:
        raise ValueError(f"mask {mask.shape} does not match the image {values.shape}")
    return float(values[mask].mean()) if mask.any() else math.nan


def psnr(image: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None, data_range: float = 1.0) -> float:
    """PSNR in dB over all pixels, or only those inside ``mask``; inf for identical images, nan for an empty mask."""
    image = np.asarray(image, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if image.shape != target.shape:
        raise ValueError(f"image {image.shape} and target {target.shape} differ in shape")
    mse = _masked_mean((image - target) ** 2, mask)
    if math.isnan(mse):
        return math.nan
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def _gaussian_blur(image: np.ndarray, sigma: float, radius: int) -> np.ndarray:
    """Separable Gaussian blur of the two leading axes with reflected borders."""
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    height, width = image.shape[:2]
    pad = [(radius, radius), (radius, radius)] + [(0, 0)] * (image.ndim - 2)
    padded = np.pad(image, pad, mode="reflect")
    rows = sum(w * padded[k : k + height] for k, w in enumerate(taps))
    return sum(w * rows[:, k : k + width] for k, w in enumerate(taps))


def ssim_map(
    image: np.ndarray, target: np.ndarray, data_range: float = 1.0, sigma: float = 1.5, radius: int = 5
) -> np.ndarray:
    """Per-pixel SSIM (Wang et al. 2004, 11x11 Gaussian window with sigma 1.5), averaged over colour channels."""
    x = np.asarray(image, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if x.shape != y.shape or x.ndim not in (2, 3):
        raise ValueError(f"image {x.shape} and target {y.shape} must be one (H, W) or (H, W, C) shape")
    if min(x.shape[:2]) <= radius:
        raise ValueError(f"images must be larger than {radius} pixels on each side for SSIM, got {x.shape[:2]}")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = _gaussian_blur(x, sigma, radius), _gaussian_blur(y, sigma, radius)
    var_x = _gaussian_blur(x * x, sigma, radius) - mu_x**2
    var_y = _gaussian_blur(y * y, sigma, radius) - mu_y**2
    cov = _gaussian_blur(x * y, sigma, radius) - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim.mean(axis=-1) if ssim.ndim == 3 else ssim


def ssim(image: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None, data_range: float = 1.0) -> float:
    """Mean SSIM over the frame, or the mean of the SSIM map inside ``mask`` (nan for an empty mask)."""
    return _masked_mean(ssim_map(image, target, data_range), mask)


# ----------------------------------------------------------------------------------------------------------------
# Reference binding
# ----------------------------------------------------------------------------------------------------------------


def change_ratio(clip_before: np.ndarray, clip_after: np.ndarray, object_mask: np.ndarray) -> dict:
    """How much an edit of one object's reference leaked outside that object.

    ``ratio`` = mean |change| outside the object's mask / mean |change| inside it: 0 for a leakage-free edit,
    about 1 for an edit that changed everything alike; nan when the edit changed nothing inside the mask.
    """
    before = np.asarray(clip_before, dtype=np.float64)
    after = np.asarray(clip_after, dtype=np.float64)
    if before.shape != after.shape:
        raise ValueError(f"clips differ in shape: {before.shape} vs {after.shape}")
    object_mask = np.asarray(object_mask, dtype=bool)
    if object_mask.shape != before.shape[:-1]:
        raise ValueError(f"object mask {object_mask.shape} must be the clip's {before.shape[:-1]}")
    if object_mask.all() or not object_mask.any():
        raise ValueError("the object mask must cover some but not all pixels")
    change = np.abs(after - before).mean(axis=-1)
    inside, outside = float(change[object_mask].mean()), float(change[~object_mask].mean())
    return {"inside": inside, "outside": outside, "ratio": outside / inside if inside > 0 else math.nan}


def mean_colour(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Mean RGB of an image or clip (uint8 images are scaled to [0, 1]), inside ``mask`` when given."""
    image = np.asarray(image)
    scale = 255.0 if image.dtype == np.uint8 else 1.0
    pixels = image.reshape(-1, image.shape[-1]) if mask is None else image[np.asarray(mask, dtype=bool)]
    if len(pixels) == 0:
        raise ValueError("cannot take the mean colour of an empty region")
    return pixels.astype(np.float64).mean(axis=0) / scale


def relative_colours(colours: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Log-chromaticities of ``colours`` relative to their mean: what is left of each colour once what all of them
    share is taken out, the brightness of a region's shading and the colour of the light that falls on all of them."""
    logs = {key: np.log(np.maximum(np.asarray(colour, dtype=np.float64), 1e-3)) for key, colour in colours.items()}
    chroma = {key: value - value.mean() for key, value in logs.items()}
    shared = np.mean(list(chroma.values()), axis=0)
    return {key: value - shared for key, value in chroma.items()}


def binding_accuracy(
    clip: np.ndarray, object_ids: np.ndarray, reference_colours: dict[int, np.ndarray], assignment: dict[int, int]
) -> float:
    """Fraction of objects whose generated region is closer in relative colour to their assigned reference than to
    every other reference in ``reference_colours`` (each reference's colour in [0, 1]: a picture's keyed subject).

    ``assignment`` maps object id -> id of the reference it should look like (identity before a swap, the swap
    after it), so swapping two references swaps the expected looks. Regions and references are compared as
    ``relative_colours``: a region is its reference's colour lit, darker and tinted by the light, so absolute colours
    put a dim red object nearer a dark blue reference than a bright red one, and the Cycles target itself scored
    chance (0.50 on every held-out pair). Objects absent from the clip are skipped; with fewer than two left there is
    nothing to tell apart (NaN).
    """
    masks = {o: np.asarray(object_ids) == o for o in assignment}
    present = {o: r for o, r in assignment.items() if masks[o].any()}
    if len(present) < 2:
        return math.nan
    regions = relative_colours({o: mean_colour(clip, masks[o]) for o in present})
    references = relative_colours(reference_colours)
    hits = 0
    for object_id, reference_id in present.items():
        distances = {rid: float(np.linalg.norm(regions[object_id] - colour)) for rid, colour in references.items()}
        hits += all(distances[reference_id] < d for rid, d in distances.items() if rid != reference_id)
    return hits / len(present)


# ----------------------------------------------------------------------------------------------------------------
# Structure: edges against the guidance passes
# ----------------------------------------------------------------------------------------------------------------


def image_edges(image: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """Thin edges of an image: Sobel gradient of luminance above ``threshold``, kept where it is a local maximum
    along the dominant gradient axis. The gradient is scaled so a step of height h gives magnitude h on the two pixels
    either side of it, so ``threshold`` is the smallest luminance step that counts as an edge.
    """
    image = np.asarray(image, dtype=np.float64)
    luma = image @ LUMA_WEIGHTS if image.ndim == 3 else image
    padded = np.pad(luma, 1, mode="edge")
    height, width = luma.shape

    def at(dv: int, du: int) -> np.ndarray:
        return padded[1 + dv : 1 + dv + height, 1 + du : 1 + du + width]

    gx = (at(-1, 1) + 2 * at(0, 1) + at(1, 1) - at(-1, -1) - 2 * at(0, -1) - at(1, -1)) / 4
    gy = (at(1, -1) + 2 * at(1, 0) + at(1, 1) - at(-1, -1) - 2 * at(-1, 0) - at(-1, 1)) / 4
    magnitude = np.hypot(gx, gy)
    m = np.pad(magnitude, 1, mode="constant")
    left, right = m[1:-1, :-2], m[1:-1, 2:]
    up, down = m[:-2, 1:-1], m[2:, 1:-1]
    horizontal = np.abs(gx) >= np.abs(gy)
    peak = np.where(horizontal, (magnitude >= left) & (magnitude >= right), (magnitude >= up) & (magnitude >= down))
    return (magnitude > threshold) & peak


def guidance_edges(object_id: np.ndarray, depth: np.ndarray, depth_rel_tol: float = 0.1) -> np.ndarray:
    """Discontinuities of the ID and depth passes: both pixels of every neighbouring pair whose object IDs differ
    or whose depths differ by more than ``depth_rel_tol`` of the nearer one (background has depth 0)."""
    object_id = np.asarray(object_id)
    depth = np.asarray(depth, dtype=np.float64)
    edges = np.zeros(object_id.shape, dtype=bool)
    for axis in (0, 1):
        a = [slice(None), slice(None)]
        b = [slice(None), slice(None)]
        a[axis], b[axis] = slice(None, -1), slice(1, None)
        da, db = depth[tuple(a)], depth[tuple(b)]
        jump = (object_id[tuple(a)] != object_id[tuple(b)]) | (np.abs(da - db) > depth_rel_tol * np.minimum(da, db))
        edges[tuple(a)] |= jump
        edges[tuple(b)] |= jump
    return edges


def _dilate(mask: np.ndarray, radius_px: float) -> np.ndarray:
    """Pixels within Euclidean distance ``radius_px`` of a set pixel."""
    r = int(math.floor(radius_px))
    padded = np.pad(mask, r, mode="constant")
    height, width = mask.shape
    out = np.zeros_like(mask)
    for dv in range(-r, r + 1):
        for du in range(-r, r + 1):
            if dv * dv + du * du <= radius_px * radius_px:
                out |= padded[r + dv : r + dv + height, r + du : r + du + width]
    return out


def edge_f_score(predicted: np.ndarray, reference: np.ndarray, tolerance_px: float = 2.0) -> dict:
    """Precision, recall and F-score of predicted edge pixels against reference edge pixels, where a pixel counts
    as matched when an edge of the other set lies within ``tolerance_px``. Two empty edge maps agree (F = 1)."""
    predicted = np.asarray(predicted, dtype=bool)
    reference = np.asarray(reference, dtype=bool)
    if predicted.shape != reference.shape:
        raise ValueError(f"edge maps differ in shape: {predicted.shape} vs {reference.shape}")
    if not predicted.any() and not reference.any():
        return {"precision": 1.0, "recall": 1.0, "f_score": 1.0}
    precision = float((predicted & _dilate(reference, tolerance_px)).sum() / max(predicted.sum(), 1))
    recall = float((reference & _dilate(predicted, tolerance_px)).sum() / max(reference.sum(), 1))
    f_score = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f_score": f_score}


def patch_grid_ratio(clip: np.ndarray, periods: Sequence[int] = (8, 16), object_ids: np.ndarray | None = None
                     ) -> float:
    """How visible a patch grid is: the mean absolute colour step across pixel borders at multiples of a period
    (between columns p*k - 1 and p*k, and rows likewise) over the mean step everywhere else, the largest over
    ``periods``. About 1.0 for a render; a clip upsampled from 8x8 patches shows its grid well above that.

    With ``object_ids`` (F, H, W, the ID pass) steps between two objects are left out on both sides: an object's
    outline that happens to lie along a grid line is a real edge, many times the mean step, and on held-out shots
    the 1% of grid-line steps that were outlines made 0.2-0.3 of the ratio, in the Cycles target as in the clip."""
    clip = np.asarray(clip, dtype=np.float64)
    clip = clip / 255.0 if clip.max() > 1.0 else clip
    dx = np.abs(np.diff(clip, axis=2)).mean(axis=-1)  # (F, H, W-1): step between columns x and x + 1
    dy = np.abs(np.diff(clip, axis=1)).mean(axis=-1)  # (F, H-1, W)
    keep_x, keep_y = np.ones(dx.shape, bool), np.ones(dy.shape, bool)
    if object_ids is not None:
        keep_x, keep_y = object_ids[:, :, 1:] == object_ids[:, :, :-1], object_ids[:, 1:] == object_ids[:, :-1]
    ratios = []
    for period in periods:
        on_x = np.broadcast_to((np.arange(1, clip.shape[2]) % period) == 0, dx.shape)
        on_y = np.broadcast_to(((np.arange(1, clip.shape[1]) % period) == 0)[:, None], dy.shape)
        border = np.concatenate([dx[on_x & keep_x], dy[on_y & keep_y]])
        rest = np.concatenate([dx[~on_x & keep_x], dy[~on_y & keep_y]])
        if border.size and rest.size and rest.mean() > 0:
            ratios.append(float(border.mean() / rest.mean()))
    return max(ratios) if ratios else float("nan")


def colour_drift(clip: np.ndarray, object_ids: np.ndarray, min_pixels: int = 16) -> dict[int, float]:
    """Per object: how far the mean colour of its pixels in the last quarter of the shot has moved from the first
    quarter's, relative to the first (|last - first| / |first|, RGB). Objects seen too little in either quarter
    (fewer than ``min_pixels``) are left out."""
    frames = len(clip)
    quarter = max(frames // 4, 1)
    first, last = slice(0, quarter), slice(frames - quarter, frames)
    drift = {}
    for obj in np.unique(object_ids):
        if obj == 0:
            continue
        a, b = object_ids[first] == obj, object_ids[last] == obj
        if a.sum() < min_pixels or b.sum() < min_pixels:
            continue
        start, end = mean_colour(clip[first], a), mean_colour(clip[last], b)
        drift[int(obj)] = float(np.linalg.norm(end - start) / max(np.linalg.norm(start), 1e-6))
    return drift
