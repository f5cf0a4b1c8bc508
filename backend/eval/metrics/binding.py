"""Reference binding: how far an edit of one reference leaks, and whether each object looks like its reference."""

from __future__ import annotations

import math

import numpy as np


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
