"""A reference picture as the model should read it: its subject, keyed out of its background.

Artists bind pictures (concept art, a photo, a render of the character), not swatches, and a picture's background
is often most of it: a white mannequin drawn small on a busy green pattern is, by its pixels, a green reference, and
the model painted the mannequin green (held-out shot 1000000). So before a reference is encoded, a picture's
subject is found and cropped, and what is left of its background is filled with the subject's own mean colour: a
picture then reads like a swatch of its subject. A swatch (a look that fills the frame) is left as it is.

The subject is what differs from every colour of the border band (so a patterned background is known by all its
colours), is connected to the middle of the picture (pattern elements that happen not to touch the border are left
out) and is set off by an edge. When that finds nothing, nearly the whole picture, or a region with no edge around
it (a gradient), the image is taken as a swatch. Pattern elements left out that way teach their colours to the
background as well, so the ones the subject stands on are left out too: held-out shot 1000000's white mannequin on
a green page with blue puzzle pieces, none touching the border, was read with the three pieces behind it, mean
colour (0.57, 0.69, 0.78); without them (0.79, 0.80, 0.82).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

WORK_SIDE = 128  # keyed at this long side at most (references are encoded at 64x64)
BORDER_SHARE = 0.06  # border band that shows the background, as a share of the short side
BORDER_LEVELS = 32  # border colours are compared at this many levels per channel
COLOUR_DISTANCE = 0.15  # RGB distance in [0, 1] from every border colour that makes a pixel the subject's
MIDDLE_SHARE = 0.2  # the subject must reach into the middle box of this share of each side
SUBJECT_AREA = (0.04, 0.85)  # a keyed subject covers this share of the picture; outside it the image is a swatch
EDGE_BAND = 2  # pixels either side of the subject's outline whose colour distances must step by COLOUR_DISTANCE
CROP_MARGIN = 0.08  # around the subject, as a share of its larger side
STRAY_SHARE = 0.02  # pattern elements apart from the subject, over this share of the picture, teach their colours


def _resized(image: np.ndarray, side: int) -> np.ndarray:
    """(H, W, 3) float -> long side at most ``side``, by area averaging."""
    height, width = image.shape[:2]
    scale = min(1.0, side / max(height, width))
    if scale == 1.0:
        return image
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].float()
    return F.interpolate(tensor, size=size, mode="area")[0].numpy().transpose(1, 2, 0).astype(np.float64)


def _border_colours(image: np.ndarray, band: int) -> np.ndarray:
    """(K, 3) every colour of the border band, rounded to 1/32 (k-means clusters lose a pattern's rarer colours,
    and then its elements look like the subject)."""
    pixels = np.concatenate([image[:band].reshape(-1, 3), image[-band:].reshape(-1, 3),
                             image[:, :band].reshape(-1, 3), image[:, -band:].reshape(-1, 3)])
    return np.unique(np.round(pixels * BORDER_LEVELS) / BORDER_LEVELS, axis=0)


def _dilated(mask: np.ndarray, pixels: int) -> np.ndarray:
    tensor = torch.from_numpy(mask)[None, None].float()
    return F.max_pool2d(tensor, 2 * pixels + 1, stride=1, padding=pixels)[0, 0].bool().numpy()


def _grow(seed: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """The pixels of ``allowed`` 8-connected to ``seed`` (both (H, W) bool)."""
    region = torch.from_numpy(seed & allowed)[None, None].float()
    inside = torch.from_numpy(allowed)[None, None].float()
    while True:
        grown = F.max_pool2d(region, 3, stride=1, padding=1) * inside
        if torch.equal(grown, region):
            return region[0, 0].bool().numpy()
        region = grown


def _distance_to(image: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """(H, W) RGB distance of each pixel to the nearest of ``colours`` (K, 3)."""
    flat = image.reshape(-1, 1, 3)
    distance = np.min([np.sqrt(((flat - chunk[None]) ** 2).sum(-1)).min(-1)
                       for chunk in np.array_split(colours, max(1, len(colours) // 256))], axis=0)
    return distance.reshape(image.shape[:2])


def subject_mask(image: np.ndarray) -> np.ndarray | None:
    """(H, W) bool mask of a picture's subject ((H, W, 3) float in [0, 1]), or None for a swatch."""
    height, width = image.shape[:2]
    band = max(2, round(BORDER_SHARE * min(height, width)))
    if min(height, width) <= 4 * band:
        return None
    middle = np.zeros((height, width), bool)
    dy, dx = round(height * (1 - MIDDLE_SHARE) / 2), round(width * (1 - MIDDLE_SHARE) / 2)
    middle[dy:height - dy, dx:width - dx] = True
    centres = _border_colours(image, band)
    distance = _distance_to(image, centres)
    subject = _grow(middle, distance > COLOUR_DISTANCE)
    stray = (distance > COLOUR_DISTANCE) & ~subject
    if stray.mean() > STRAY_SHARE:  # pattern elements that touch neither the border nor the subject: their colours
        palette = np.unique(np.concatenate([centres, np.round(image[stray] * BORDER_LEVELS) / BORDER_LEVELS]), axis=0)
        again = _distance_to(image, palette)  # are the background's too, where they lie behind the subject
        keyed = _grow(middle, again > COLOUR_DISTANCE)
        if keyed.mean() >= SUBJECT_AREA[0]:  # unless that leaves too little of a subject that wears them too
            distance, subject = again, keyed
    outside = np.zeros_like(subject)
    outside[0, :] = outside[-1, :] = outside[:, 0] = outside[:, -1] = True
    subject |= ~_grow(outside, ~subject)  # holes inside the subject (a white shirt on a white page) are its own
    if not SUBJECT_AREA[0] <= subject.mean() <= SUBJECT_AREA[1]:
        return None
    inner, outer = subject & ~_dilated(~subject, EDGE_BAND), _dilated(subject, EDGE_BAND) & ~subject
    if np.median(distance[inner]) - np.median(distance[outer]) < COLOUR_DISTANCE:
        return None  # no edge around it: a gradient or a vignette, where the threshold merely falls somewhere
    return subject


def reference_subject(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB reference -> the image the reference encoder reads (uint8 RGB): a picture's subject,
    cropped square around it, on its own mean colour; a swatch unchanged."""
    picture = _resized(image.astype(np.float64) / 255.0, WORK_SIDE)
    subject = subject_mask(picture)
    if subject is None:
        return image
    rows, cols = np.nonzero(subject)
    centre = ((rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2)
    half = max(rows.max() - rows.min(), cols.max() - cols.min()) * (0.5 + CROP_MARGIN) + 1
    top, left = max(0, round(centre[0] - half)), max(0, round(centre[1] - half))
    bottom, right = min(picture.shape[0], round(centre[0] + half)), min(picture.shape[1], round(centre[1] + half))
    crop = np.where(subject[..., None], picture, picture[subject].mean(0))[top:bottom, left:right]
    return np.round(crop * 255).astype(np.uint8)


def subject_colour(image: np.ndarray) -> tuple[np.ndarray, bool]:
    """(H, W, 3) uint8 RGB reference -> (its subject's mean colour in [0, 1], whether it is a picture): the mean over
    the keyed subject of a picture, over the whole image of a swatch."""
    picture = _resized(image.astype(np.float64) / 255.0, WORK_SIDE)
    subject = subject_mask(picture)
    if subject is None:
        return picture.reshape(-1, 3).mean(0), False
    return picture[subject].mean(0), True
