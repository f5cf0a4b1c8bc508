"""Shot bundle -> model tensors: guidance passes, camera rays, per-object masks and reference images.

Everything the previs model sees about a shot is built here, so training and sampling read a bundle the same way.
Layouts: clips are (F, C, H, W) float32; masks are (N_obj, F, H, W) area coverage in [0, 1]; token masks are
(N_obj, F, h * w) in the patch order of :class:`backend.models.previs_dit.PrevisDiT` (row-major over the frame).

Guidance channels (5): inverse depth normalised per clip (nearest surface = 1, background = 0, so far-away and
background stay distinct from near), camera-space normals (3, zeros on background) and object-ID boundaries as an
edge map. Camera channels (6): Plücker rays (direction, moment) relative to the first frame's camera, with
translations divided by the first frame's mean depth so that the camera and the normalised depth share one scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

GUIDANCE_CHANNELS = 5
CAMERA_CHANNELS = 6
CONDITION_CHANNELS = GUIDANCE_CHANNELS + CAMERA_CHANNELS
REFERENCE_SIZE = 64


@dataclass
class ShotConditions:
    """The tensors one shot contributes to a model call (no batch axis)."""

    guidance: torch.Tensor  # (F, CONDITION_CHANNELS, h, w) at the working resolution
    object_masks: torch.Tensor  # (N_obj, F, h, w) area coverage at the working resolution
    references: torch.Tensor | None  # (N_obj, 3, REFERENCE_SIZE, REFERENCE_SIZE) in [-1, 1], None without objects
    object_ids: list[int]  # bundle object id of each mask / reference row
    has_reference: torch.Tensor  # (N_obj,) bool: False where an object has no reference image (its strength is 0)


def working_resolution(width: int, height: int, patch_size: int, max_tokens_per_frame: int) -> tuple[int, int]:
    """The (width, height) the model runs at: the bundle's aspect ratio, multiples of the patch size, and no more
    tokens per frame than the model was built for (a 256x144 bundle runs at 128x72 on a 144-token model)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"resolution must be positive, got {width}x{height}")
    scale = min(1.0, (max_tokens_per_frame * patch_size**2 / (width * height)) ** 0.5)
    w = max(1, int(width * scale / patch_size + 1e-6)) * patch_size
    h = max(1, int(height * scale / patch_size + 1e-6)) * patch_size
    return w, h


def inverse_depth(depths: np.ndarray) -> np.ndarray:
    """(F, H, W) planar depth with 0 on background -> inverse depth divided by its clip maximum, 0 on background."""
    inv = np.where(depths > 0, 1.0 / np.where(depths > 0, depths, 1.0), 0.0)
    peak = inv.max()
    return (inv / peak if peak > 0 else inv).astype(np.float32)


def id_edges(object_ids: np.ndarray) -> np.ndarray:
    """(F, H, W) int IDs -> (F, H, W) float {0, 1}: 1 where a 4-neighbour has another ID (both sides of a boundary)."""
    edges = np.zeros(object_ids.shape, dtype=bool)
    dy = object_ids[:, 1:, :] != object_ids[:, :-1, :]
    dx = object_ids[:, :, 1:] != object_ids[:, :, :-1]
    edges[:, 1:, :] |= dy
    edges[:, :-1, :] |= dy
    edges[:, :, 1:] |= dx
    edges[:, :, :-1] |= dx
    return edges.astype(np.float32)


def relative_cameras(world_to_cameras: Sequence[np.ndarray], first_depth: np.ndarray) -> list[np.ndarray]:
    """World-to-camera matrices re-expressed with frame 0's camera as the world, translations in units of frame 0's
    mean depth: the rays then depend on the camera move, not on where the shot sits in the scene or its scale."""
    first_to_world = np.linalg.inv(np.asarray(world_to_cameras[0], dtype=np.float64))
    valid = first_depth > 0
    scale = float(first_depth[valid].mean()) if valid.any() else 1.0
    cameras = []
    for w2c in world_to_cameras:
        rel = np.asarray(w2c, dtype=np.float64) @ first_to_world
        rel[:3, 3] /= scale
        cameras.append(rel)
    return cameras


def camera_rays(Ks: Sequence[np.ndarray], world_to_cameras: Sequence[np.ndarray], first_depth: np.ndarray,
                height: int, width: int) -> np.ndarray:
    """(F, 6, H, W) Plücker embedding of every pixel's ray, at the bundle's resolution."""
    from cinepregen_addon.core.camera_geometry import plucker_embedding

    cameras = relative_cameras(world_to_cameras, first_depth)
    rays = [plucker_embedding(np.asarray(K, dtype=np.float64), w2c, height, width) for K, w2c in zip(Ks, cameras,
                                                                                                      strict=True)]
    return np.stack(rays).transpose(0, 3, 1, 2).astype(np.float32)


def area_resize(clip: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(..., H, W) -> (..., height, width) by area averaging (exact box filter when the sizes divide)."""
    if clip.shape[-2:] == (height, width):
        return clip
    lead = clip.shape[:-2]
    out = F.interpolate(clip.reshape(-1, 1, *clip.shape[-2:]).float(), size=(height, width), mode="area")
    return out.reshape(*lead, height, width)


def masks_to_tokens(masks: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Per-object video masks (..., F, H, W) -> token coverage (..., F, H/p * W/p), pooled frame by frame.

    Area pooling over each patch: a token gets the fraction of its pixels inside the object, so a token the object
    never touches is exactly 0 (the masked IP-Adapter then leaves it bit-identical). diffusers'
    ``IPAdapterMaskProcessor.downsample`` is 2-D and bicubic (it overshoots and loses the frame axis), hence this.
    """
    *lead, frames, height, width = masks.shape
    if height % patch_size or width % patch_size:
        raise ValueError(f"mask size {width}x{height} is not a multiple of the patch size {patch_size}")
    pooled = F.avg_pool2d(masks.reshape(-1, 1, height, width).float(), kernel_size=patch_size)
    return pooled.reshape(*lead, frames, (height // patch_size) * (width // patch_size))


def reference_tensor(image: np.ndarray, size: int = REFERENCE_SIZE) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, size, size) float in [-1, 1], centre-cropped to a square then area-resized."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"a reference image must be (H, W, 3) RGB, got shape {image.shape}")
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = torch.from_numpy(np.ascontiguousarray(image[top:top + side, left:left + side])).permute(2, 0, 1)
    square = F.interpolate(square[None].float(), size=(size, size), mode="area")[0]
    return square / 127.5 - 1.0


def shot_conditions(bundle, patch_size: int, max_tokens_per_frame: int,
                    references_override: dict[int, np.ndarray] | None = None) -> ShotConditions:
    """Every conditioning tensor of a :class:`ShotBundle`, at the model's working resolution.

    ``references_override`` (object id -> RGB uint8) replaces the bundle's reference images for this call; it is
    how evaluation swaps or edits one object's look.
    """
    if not bundle.passes:
        raise ValueError(f"shot bundle {bundle.name!r} has no frames")
    width, height = working_resolution(bundle.width, bundle.height, patch_size, max_tokens_per_frame)
    depth = np.stack([p.depth for p in bundle.passes]).astype(np.float32)  # (F, H, W)
    normal = np.stack([p.normal for p in bundle.passes]).astype(np.float32)  # (F, H, W, 3)
    ids = np.stack([p.object_id for p in bundle.passes])  # (F, H, W)
    full = np.concatenate([
        inverse_depth(depth)[:, None],
        normal.transpose(0, 3, 1, 2),
        id_edges(ids)[:, None],
        camera_rays([c.K for c in bundle.cameras], [c.world_to_camera for c in bundle.cameras], depth[0],
                    bundle.height, bundle.width),
    ], axis=1)  # (F, 11, H, W)
    guidance = area_resize(torch.from_numpy(full), height, width)

    images = bundle.reference_images if references_override is None else references_override
    object_ids = [obj.id for obj in bundle.objects]
    masks = torch.from_numpy(np.stack([ids == i for i in object_ids]) if object_ids
                             else np.zeros((0, *ids.shape), dtype=bool))
    masks = area_resize(masks.float(), height, width)  # (N_obj, F, h, w)
    has_reference = torch.tensor([i in images for i in object_ids], dtype=torch.bool)
    references = None
    if object_ids:
        blank = np.zeros((REFERENCE_SIZE, REFERENCE_SIZE, 3), np.uint8)
        references = torch.stack([reference_tensor(images.get(i, blank)) for i in object_ids])
    return ShotConditions(guidance, masks, references, object_ids, has_reference)


def batch_conditions(shots: Sequence[ShotConditions]) -> dict[str, torch.Tensor | None]:
    """Stack shots of equal frame count and working size into model inputs, padding the object axis.

    Padded objects (and objects without a reference) get strength 0 and an all-zero mask, which the model treats
    exactly as absent. Returns ``guidance`` (B, F, C, h, w), ``references`` (B, N, 3, S, S) or None,
    ``object_masks`` (B, N, F, h, w) or None and ``reference_strengths`` (B, N) or None.
    """
    guidance = torch.stack([s.guidance for s in shots])
    n_obj = max(len(s.object_ids) for s in shots)
    if n_obj == 0:
        return {"guidance": guidance, "references": None, "object_masks": None, "reference_strengths": None}
    batch, frames = guidance.shape[:2]
    height, width = guidance.shape[-2:]
    references = torch.zeros(batch, n_obj, 3, REFERENCE_SIZE, REFERENCE_SIZE)
    masks = torch.zeros(batch, n_obj, frames, height, width)
    strengths = torch.zeros(batch, n_obj)
    for b, shot in enumerate(shots):
        n = len(shot.object_ids)
        if n:
            references[b, :n] = shot.references
            masks[b, :n] = shot.object_masks
            strengths[b, :n] = shot.has_reference.float()
    return {"guidance": guidance, "references": references, "object_masks": masks, "reference_strengths": strengths}
