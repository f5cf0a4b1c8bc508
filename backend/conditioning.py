"""Shot bundle -> model tensors: guidance passes, camera rays, per-object masks and reference images.

Everything the previs model sees about a shot is built here, so training and sampling read a bundle the same way.
Layouts: clips are (F, C, H, W) float32; masks are (N_obj, F, H, W) area coverage in [0, 1]; token masks are
(N_obj, F, h * w) in the patch order of :class:`backend.models.previs_dit.PrevisDiT` (row-major over the frame).

Guidance channels (5): inverse depth normalised per clip (nearest surface = 1, background = 0, so far-away and
background stay distinct from near), camera-space normals (3, zeros on background) and object-ID boundaries as an
edge map. Camera channels (6): Plücker rays (direction, moment) relative to the first frame's camera, with
translations divided by the first frame's mean depth so that the camera and the normalised depth share one scale.
Shading channels (4): the clay pass (the scene's own light on grey surfaces) in [0, 1] and a flag that is 1 where the
bundle has one; a model that paints albedo has its frames lit by it (:func:`lit_by_clay`). A *clip* is a window of
the shot (long shots are generated window by window), and every per-clip quantity (depth normalisation, the rays'
first frame) is taken over the window, so a window of a 240-frame shot looks to the model like a whole short shot.

The full-resolution refiner (``backend.models.frame_refiner``) reads the guidance at the bundle's own resolution:
inverse depth, normals, ID edges and shading (:data:`FULL_RES_CHANNELS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from backend.reference_pictures import reference_subject

GUIDANCE_CHANNELS = 5
CAMERA_CHANNELS = 6
CONDITION_CHANNELS = GUIDANCE_CHANNELS + CAMERA_CHANNELS
SHADING_CHANNELS = 4  # clay RGB + "has a clay pass" flag
FULL_RES_CHANNELS = GUIDANCE_CHANNELS + SHADING_CHANNELS
REFERENCE_SIZE = 64
CLAY_WHITE = 0.9063  # the clay pass's grey (albedo 0.8 in linear light) as sRGB: a surface of this albedo looks as clay


@dataclass
class ShotPasses:
    """A shot's passes as tensors at the bundle's resolution, read once; clips (windows) are cut from it."""

    inverse_depth: torch.Tensor  # (F, H, W) 1 / depth, 0 on background (normalised per clip later)
    surface: torch.Tensor  # (F, 4, H, W) camera-space normals and ID edges
    shading: torch.Tensor  # (F, 4, H, W) clay pass in [0, 1] and its flag (zeros without a clay pass)
    object_ids: torch.Tensor  # (F, H, W) int
    Ks: list[np.ndarray]
    world_to_cameras: list[np.ndarray]
    depth_means: np.ndarray  # (F,) mean depth of each frame's surfaces (scale of the clip's camera translations)
    ids: list[int]  # bundle object id of each object
    references: torch.Tensor | None  # (N_obj, 3, S, S) in [-1, 1]
    has_reference: torch.Tensor  # (N_obj,) bool

    @property
    def frames(self) -> int:
        return self.inverse_depth.shape[0]


@dataclass
class ShotConditions:
    """The tensors one clip contributes to a model call (no batch axis)."""

    guidance: torch.Tensor  # (F, CONDITION_CHANNELS, h, w) at the working resolution
    object_masks: torch.Tensor  # (N_obj, F, h, w) area coverage at the working resolution
    references: torch.Tensor | None  # (N_obj, 3, REFERENCE_SIZE, REFERENCE_SIZE) in [-1, 1], None without objects
    object_ids: list[int]  # bundle object id of each mask / reference row
    has_reference: torch.Tensor  # (N_obj,) bool: False where an object has no reference image (its strength is 0)
    shading: torch.Tensor | None = None  # (F, SHADING_CHANNELS, h, w) at the working resolution
    full_guidance: torch.Tensor | None = None  # (F, FULL_RES_CHANNELS, H, W) at the bundle's resolution


def working_resolution(width: int, height: int, patch_size: int, max_tokens_per_frame: int) -> tuple[int, int]:
    """The (width, height) the model runs at: the bundle's aspect ratio, multiples of the patch size, and no more
    tokens per frame than the model was built for (a 256x144 bundle runs at 128x72 on a 144-token model)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"resolution must be positive, got {width}x{height}")
    scale = min(1.0, (max_tokens_per_frame * patch_size**2 / (width * height)) ** 0.5)
    w = max(1, int(width * scale / patch_size + 1e-6)) * patch_size
    h = max(1, int(height * scale / patch_size + 1e-6)) * patch_size
    return w, h


def normalised(inverse_depth: torch.Tensor) -> torch.Tensor:
    """Inverse depth divided by its clip maximum (0 stays background)."""
    peak = inverse_depth.max()
    return inverse_depth / peak if peak > 0 else inverse_depth


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


def relative_cameras(world_to_cameras: Sequence[np.ndarray], first_depth: np.ndarray | None,
                     scale: float | None = None) -> list[np.ndarray]:
    """World-to-camera matrices re-expressed with frame 0's camera as the world, translations in units of frame 0's
    mean depth (``scale``, or the mean of ``first_depth`` over its surfaces): the rays then depend on the camera
    move, not on where the shot sits in the scene or its scale."""
    first_to_world = np.linalg.inv(np.asarray(world_to_cameras[0], dtype=np.float64))
    if scale is None:
        valid = first_depth > 0
        scale = float(first_depth[valid].mean()) if valid.any() else 1.0
    cameras = []
    for w2c in world_to_cameras:
        rel = np.asarray(w2c, dtype=np.float64) @ first_to_world
        rel[:3, 3] /= scale
        cameras.append(rel)
    return cameras


def camera_rays_at(Ks: Sequence[np.ndarray], cameras: Sequence[np.ndarray], full_height: int, full_width: int,
                   height: int, width: int) -> np.ndarray:
    """(F, 6, height, width) Plücker embedding of the rays through the centres of a ``width`` x ``height`` grid over
    a ``full_width`` x ``full_height`` picture with intrinsics ``Ks`` (pixel centres map exactly, by scaling K)."""
    from cinepregen_addon.core.camera_geometry import plucker_embedding

    sx, sy = width / full_width, height / full_height
    rays = []
    for K, w2c in zip(Ks, cameras, strict=True):
        scaled = np.asarray(K, dtype=np.float64).copy()
        scaled[0] *= sx
        scaled[1] *= sy
        scaled[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
        scaled[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
        rays.append(plucker_embedding(scaled, w2c, height, width))
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
    """(H, W, 3) uint8 RGB -> (3, size, size) float in [-1, 1]: a picture's subject keyed out of its background
    (``backend.reference_pictures``; a swatch as it is), centre-cropped to a square, then area-resized."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"a reference image must be (H, W, 3) RGB, got shape {image.shape}")
    image = reference_subject(image)
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = torch.from_numpy(np.ascontiguousarray(image[top:top + side, left:left + side])).permute(2, 0, 1)
    square = F.interpolate(square[None].float(), size=(size, size), mode="area")[0]
    return square / 127.5 - 1.0


def shot_passes(bundle, references_override: dict[int, np.ndarray] | None = None) -> ShotPasses:
    """Read a :class:`ShotBundle`'s passes once into tensors. ``references_override`` (object id -> RGB uint8)
    replaces the bundle's reference images; it is how evaluation swaps or edits one object's look."""
    if not bundle.passes:
        raise ValueError(f"shot bundle {bundle.name!r} has no frames")
    depth = np.stack([p.depth for p in bundle.passes]).astype(np.float32)  # (F, H, W)
    ids = np.stack([p.object_id for p in bundle.passes])  # (F, H, W)
    normal = np.stack([p.normal for p in bundle.passes]).astype(np.float32).transpose(0, 3, 1, 2)
    surface = np.concatenate([normal, id_edges(ids)[:, None]], axis=1)
    shading = np.zeros((len(bundle.passes), SHADING_CHANNELS, bundle.height, bundle.width), np.float32)
    if all(p.clay is not None for p in bundle.passes):
        shading[:, :3] = np.stack([p.clay for p in bundle.passes]).transpose(0, 3, 1, 2) / 255.0
        shading[:, 3] = 1.0
    valid = depth > 0
    means = np.array([float(d[v].mean()) if v.any() else 1.0 for d, v in zip(depth, valid, strict=True)])

    images = bundle.reference_images if references_override is None else references_override
    object_ids = [obj.id for obj in bundle.objects]
    references = None
    if object_ids:
        blank = np.zeros((REFERENCE_SIZE, REFERENCE_SIZE, 3), np.uint8)
        references = torch.stack([reference_tensor(images.get(i, blank)) for i in object_ids])
    return ShotPasses(
        inverse_depth=torch.from_numpy(np.where(valid, 1.0 / np.where(valid, depth, 1.0), 0.0).astype(np.float32)),
        surface=torch.from_numpy(surface), shading=torch.from_numpy(shading), object_ids=torch.from_numpy(ids),
        Ks=[np.asarray(c.K, dtype=np.float64) for c in bundle.cameras],
        world_to_cameras=[np.asarray(c.world_to_camera, dtype=np.float64) for c in bundle.cameras],
        depth_means=means, ids=object_ids, references=references,
        has_reference=torch.tensor([i in images for i in object_ids], dtype=torch.bool),
    )


def working_id_edges(object_ids: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(F, H, W) IDs at the bundle's size -> (F, height, width) ID edges at the working size, found at twice the
    working size (the IDs taken there by nearest pixel) and area-averaged, as training made them from its bundles of
    twice the working size: an edge is then a band of one working pixel's weight whatever the bundle's size. Found
    at the bundle's own size, a bundle at the working size (128x72) showed the DiT bands of twice that weight: on
    12 calibration shots at 128x72, 21.24 dB with them and 21.30 with these; on the 16 held-out shots 21.80 and
    21.88, the four that lost most against 256x144 gaining 0.3-0.4 dB. Bundles of twice the size are unchanged."""
    full_height, full_width = object_ids.shape[-2:]
    rows = ((torch.arange(2 * height) + 0.5) * full_height / (2 * height)).long()
    cols = ((torch.arange(2 * width) + 0.5) * full_width / (2 * width)).long()
    at_twice = object_ids[:, rows][:, :, cols]
    return area_resize(torch.from_numpy(id_edges(at_twice.numpy())), height, width)


def clip_conditions(passes: ShotPasses, start: int, length: int, width: int, height: int,
                    full_resolution: bool = False) -> ShotConditions:
    """The conditions of frames [start, start + length) of a shot as a clip of its own, at the working size
    ``width`` x ``height`` (and the refiner's full-resolution guidance with ``full_resolution``)."""
    if not 0 <= start < start + length <= passes.frames:
        raise ValueError(f"clip [{start}, {start + length}) is outside the shot's {passes.frames} frames")
    frames = slice(start, start + length)
    inverse = normalised(passes.inverse_depth[frames])[:, None]
    full_height, full_width = inverse.shape[-2:]
    cameras = relative_cameras(passes.world_to_cameras[frames], None, scale=float(passes.depth_means[start]))
    rays = camera_rays_at(passes.Ks[frames], cameras, full_height, full_width, height, width)
    local = torch.cat([inverse, passes.surface[frames].float()], dim=1)  # depth, normals, ID edges
    ids = passes.object_ids[frames]
    guidance = torch.cat([area_resize(local[:, :-1], height, width), working_id_edges(ids, height, width)[:, None],
                          torch.from_numpy(rays)], dim=1)
    masks = torch.stack([ids == i for i in passes.ids]) if passes.ids else torch.zeros((0, *ids.shape), dtype=bool)
    shading = passes.shading[frames].float()
    full = torch.cat([local, shading], dim=1) if full_resolution else None
    return ShotConditions(guidance, area_resize(masks.float(), height, width), passes.references, passes.ids,
                          passes.has_reference, area_resize(shading, height, width), full)


def lit_by_clay(albedo: torch.Tensor, shading: torch.Tensor) -> torch.Tensor:
    """Frames in [-1, 1] of surfaces with ``albedo`` (..., 3, H, W; sRGB-encoded, in [-1, 1]) under the light of the
    clay pass ``shading`` (..., SHADING_CHANNELS, H, W: clay RGB in [0, 1] and its flag).

    The clay pass is the scene's own light, shadows included, on grey surfaces of albedo 0.8, rendered exactly at
    any resolution; a surface of another albedo reflects that light in proportion, so a model that paints albedo
    leaves shading and shadow edges to the engine. The product is taken on sRGB values: with the best flat albedo
    per object it matches the Cycles target as well as the product in linear light does (40.8 vs 40.7 dB on the
    first 5 held-out shots) and keeps gradients tame near black. Where the flag is 0 (no clay pass) the albedo is
    taken as the frame itself. The background (no surface) shows the world in the clay pass as in the render: an
    albedo of CLAY_WHITE (on the [0, 1] scale) there gives it back."""
    clay, flag = shading[..., :3, :, :].to(albedo.dtype), shading[..., 3:4, :, :].to(albedo.dtype)
    lit = (albedo + 1) * clay / CLAY_WHITE - 1
    return flag * lit + (1 - flag) * albedo


def shot_conditions(bundle, patch_size: int, max_tokens_per_frame: int,
                    references_override: dict[int, np.ndarray] | None = None) -> ShotConditions:
    """Every conditioning tensor of a :class:`ShotBundle` as one clip, at the model's working resolution."""
    width, height = working_resolution(bundle.width, bundle.height, patch_size, max_tokens_per_frame)
    passes = shot_passes(bundle, references_override)
    return clip_conditions(passes, 0, passes.frames, width, height)


def batch_conditions(shots: Sequence[ShotConditions]) -> dict[str, torch.Tensor | None]:
    """Stack clips of equal frame count and working size into model inputs, padding the object axis.

    Padded objects (and objects without a reference) get strength 0 and an all-zero mask, which the model treats
    exactly as absent. Returns ``guidance`` (B, F, C, h, w), ``shading`` (B, F, 4, h, w), ``full_guidance``
    (B, F, FULL_RES_CHANNELS, H, W) or None, ``references`` (B, N, 3, S, S) or None, ``object_masks``
    (B, N, F, h, w) or None and ``reference_strengths`` (B, N) or None.
    """
    guidance = torch.stack([s.guidance for s in shots])
    batch, frames = guidance.shape[:2]
    height, width = guidance.shape[-2:]
    shading = torch.stack([s.shading if s.shading is not None else torch.zeros(frames, SHADING_CHANNELS, height, width)
                           for s in shots])
    full = torch.stack([s.full_guidance for s in shots]) if all(s.full_guidance is not None for s in shots) else None
    inputs = {"guidance": guidance, "shading": shading, "full_guidance": full}
    n_obj = max(len(s.object_ids) for s in shots)
    if n_obj == 0:
        return {**inputs, "references": None, "object_masks": None, "reference_strengths": None}
    references = torch.zeros(batch, n_obj, 3, REFERENCE_SIZE, REFERENCE_SIZE)
    masks = torch.zeros(batch, n_obj, frames, height, width)
    strengths = torch.zeros(batch, n_obj)
    for b, shot in enumerate(shots):
        n = len(shot.object_ids)
        if n:
            references[b, :n] = shot.references
            masks[b, :n] = shot.object_masks
            strengths[b, :n] = shot.has_reference.float()
    return {**inputs, "references": references, "object_masks": masks, "reference_strengths": strengths}
