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
"""

from __future__ import annotations

import numpy as np

MIN_PIXELS = 4  # an object smaller than this in a frame is left as generated there (a pixel or two of edge blend)
MIN_SHOT_PIXELS = 64  # an object with fewer pixels over the whole shot has no albedo worth holding to
MAX_GAIN = 2.0  # per-channel scale limit, both ways: a frame whose object came out black stays dark, not noise x 50


def lock_object_colours(frames: np.ndarray, object_ids: np.ndarray, shading: np.ndarray | None = None) -> np.ndarray:
    """``frames`` (F, H, W, 3) in [0, 1] with each object's albedo held at its shot mean; ``object_ids`` (F, H, W)
    from the ID pass, ``shading`` (F, H, W, 3) the clay pass in [0, 1] or None."""
    count_frames = len(frames)
    labels, inverse = np.unique(object_ids, return_inverse=True)
    inverse = inverse.reshape(object_ids.shape)
    slots = count_frames * len(labels)
    key = (np.arange(count_frames)[:, None, None] * len(labels) + inverse).ravel()
    pixels = np.bincount(key, minlength=slots).reshape(count_frames, len(labels))

    def object_means(images: np.ndarray) -> np.ndarray:  # (F, objects, 3)
        sums = np.stack([np.bincount(key, weights=images[..., c].ravel(), minlength=slots) for c in range(3)], -1)
        return sums.reshape(count_frames, len(labels), 3) / np.maximum(pixels, 1)[..., None]

    colour = object_means(frames)
    light = object_means(shading) if shading is not None else np.ones_like(colour)
    seen = pixels >= MIN_PIXELS
    weight = np.where(seen, pixels, 0)[..., None]
    shot_albedo = (colour * weight).sum(0) / np.maximum((light * weight).sum(0), 1e-3)
    gain = np.clip(shot_albedo[None] * light / np.maximum(colour, 1e-3), 1 / MAX_GAIN, MAX_GAIN)
    # an object seen in one frame only has nothing to hold to
    held = seen & ((seen.sum(0) >= 2) & (weight.sum(0)[:, 0] >= MIN_SHOT_PIXELS))[None]
    gain = np.where(held[..., None], gain, 1.0).astype(np.float32)
    out = np.empty_like(frames)
    for f in range(count_frames):
        out[f] = np.clip(frames[f] * gain[f][inverse[f]], 0.0, 1.0)
    return out
