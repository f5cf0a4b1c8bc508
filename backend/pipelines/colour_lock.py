"""Hold each object's colour steady over a shot, from the ID pass.

The DiT decides an object's colour at high noise, window by window and frame by frame, and that decision wanders:
on held-out shots an object's mean colour changes by 20-35% from the first quarter of a 20-frame shot to the last
while the Cycles render of it changes by under 2%, and the frame brightness flickers. The engine knows which pixels
are which object in every frame, and (with the clay pass) how the scene's light on each object changes, so the
wandering can be taken out exactly: an object's albedo over the whole shot is its summed colour over its summed
clay shading (pixels of every frame where it is seen); each frame's pixels of the object are scaled, per channel, so
that its colour becomes that albedo times the frame's own shading (a character walking into shadow still darkens).
A ratio of sums, not a mean of per-frame ratios: in frames where the light goes out, colour over shading is noise
over nearly zero, and such frames held two held-out shots' objects at twice their colour (-4 and -8 dB). Texture,
edges and everything inside the object are the model's; only the object's mean colour is held. Without a clay pass
the light is taken as constant.

An object with a reference can also be held towards the colour its reference shows (``reference_anchors``): the
small model reads a reference's colour loosely (a white mannequin on a blue page came out green-grey, 9 dB on the
character), while the reference's subject, keyed out of its background, gives its colour directly. What albedo a
reference's colour means depends on how the model's training targets were lit, so the gains from a reference's
colour to the albedo and the weight of the anchor against the model's own colour are measured on training shots
(``cinepregen calibrate-colours``) and kept in the weights' ``pipeline.json``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from backend.reference_pictures import subject_colour

MIN_PIXELS = 4  # an object smaller than this in a frame is left as generated there (a pixel or two of edge blend)
MIN_SHOT_PIXELS = 64  # an object with fewer pixels over the whole shot has no albedo worth holding to
MAX_GAIN = 2.0  # per-channel scale limit, both ways: a frame whose object came out black stays dark, not noise x 50


def reference_anchors(references: Mapping[int, np.ndarray], calibration: Mapping) -> dict[int, np.ndarray]:
    """Object id -> the shot albedo (colour over clay shading) its reference image (uint8 RGB) stands for: its
    subject's mean colour (``subject_colour``) times the calibration's ``picture_gain`` or ``swatch_gain``."""
    anchors = {}
    for object_id, image in references.items():
        colour, picture = subject_colour(image)
        anchors[object_id] = colour * np.asarray(calibration["picture_gain" if picture else "swatch_gain"])
    return anchors


class _ObjectFrames:
    """Per-frame, per-object pixel counts and means of images that share one ID pass (F, H, W)."""

    def __init__(self, object_ids: np.ndarray):
        self.frames = len(object_ids)
        self.labels, inverse = np.unique(object_ids, return_inverse=True)
        self.inverse = inverse.reshape(object_ids.shape)
        self.slots = self.frames * len(self.labels)
        self.key = (np.arange(self.frames)[:, None, None] * len(self.labels) + self.inverse).ravel()
        self.pixels = np.bincount(self.key, minlength=self.slots).reshape(self.frames, len(self.labels))
        self.seen = self.pixels >= MIN_PIXELS
        self.weight = np.where(self.seen, self.pixels, 0)[..., None]

    def means(self, images: np.ndarray) -> np.ndarray:  # (F, objects, 3)
        sums = np.stack([np.bincount(self.key, weights=images[..., c].ravel(), minlength=self.slots)
                         for c in range(3)], -1)
        return sums.reshape(self.frames, len(self.labels), 3) / np.maximum(self.pixels, 1)[..., None]

    def albedo(self, frames: np.ndarray, shading: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(colour, light, albedo): per-frame object means of ``frames`` and ``shading`` (ones without it), and
        (objects, 3) each object's summed colour over its summed light, over the frames where it is seen."""
        colour = self.means(frames)
        light = self.means(shading) if shading is not None else np.ones_like(colour)
        return colour, light, (colour * self.weight).sum(0) / np.maximum((light * self.weight).sum(0), 1e-3)

    def held(self) -> np.ndarray:
        """(objects,) objects seen in two frames or more, with enough pixels over the shot to hold to."""
        return (self.seen.sum(0) >= 2) & (self.weight.sum(0)[:, 0] >= MIN_SHOT_PIXELS)


def shot_albedos(frames: np.ndarray, object_ids: np.ndarray, shading: np.ndarray | None = None
                 ) -> dict[int, np.ndarray]:
    """Object id -> its shot albedo in ``frames`` (as the lock computes it), for the objects the lock holds."""
    objects = _ObjectFrames(object_ids)
    albedo, held = objects.albedo(frames, shading)[2], objects.held()
    return {int(label): albedo[j] for j, label in enumerate(objects.labels) if held[j]}


def lock_object_colours(frames: np.ndarray, object_ids: np.ndarray, shading: np.ndarray | None = None,
                        anchors: Mapping[int, np.ndarray] | None = None, anchor_weight: float = 0.0) -> np.ndarray:
    """``frames`` (F, H, W, 3) in [0, 1] with each object's albedo held at its shot mean; ``object_ids`` (F, H, W)
    from the ID pass, ``shading`` (F, H, W, 3) the clay pass in [0, 1] or None. ``anchors`` (object id -> albedo,
    see ``reference_anchors``) pull those objects' albedo towards it: own ** (1 - w) * anchor ** w, w =
    ``anchor_weight`` (0 keeps the model's own colour, 1 takes the anchor's)."""
    objects = _ObjectFrames(object_ids)
    colour, light, shot_albedo = objects.albedo(frames, shading)
    if anchors and anchor_weight:
        for j, label in enumerate(objects.labels):
            if int(label) in anchors:
                own, anchor = np.maximum(shot_albedo[j], 1e-3), np.maximum(anchors[int(label)], 1e-3)
                shot_albedo[j] = own ** (1 - anchor_weight) * anchor ** anchor_weight
    gain = np.clip(shot_albedo[None] * light / np.maximum(colour, 1e-3), 1 / MAX_GAIN, MAX_GAIN)
    # an object seen in one frame only has nothing to hold to
    held = objects.seen & objects.held()[None]
    gain = np.where(held[..., None], gain, 1.0).astype(np.float32)
    out = np.empty_like(frames)
    for f in range(objects.frames):
        out[f] = np.clip(frames[f] * gain[f][objects.inverse[f]], 0.0, 1.0)
    return out
