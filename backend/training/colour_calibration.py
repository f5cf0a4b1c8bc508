"""Calibrating the colour lock's reference anchor (``backend.pipelines.colour_lock``) on training shots.

Two things are measured on training-split shots, never on held-out ones:
- the gains from a reference's colour to the albedo the lock works in (an object's summed colour over its summed
  clay shading in the Cycles target): per channel, the median ratio over every referenced object, pictures and
  swatches apart (a kind the shots lack takes the median over both). A picture is a lit render of its subject,
  darker than its albedo; a swatch is the albedo itself, in display values, over clay that is not white;
- the anchor's weight against the model's own colour: each shot is generated once without the lock, then locked
  with each weight of ``WEIGHTS``; the weight of the best mean PSNR against the target is kept. Weigh it on shots the
  model was not trained on: on its own training shots a model has learnt its references' colours, and there the
  anchor seems worth nothing (previs-tiny on 30 of them: 23.07 dB at weight 0 and 0.25, 22.92 at 0.5).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from backend.eval.metrics import psnr
from backend.pipelines.colour_lock import lock_object_colours, reference_anchors, shot_albedos
from backend.reference_pictures import subject_colour

WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _shot(folder: Path):
    """(bundle, target frames, ID pass, clay shading) of a dataset shot with a visible target and a clay pass,
    else None."""
    from backend.bundle_io import read_shot_bundle
    from backend.eval.evaluate import load_target_frames, target_is_black

    bundle = read_shot_bundle(folder / "bundle")
    target = load_target_frames(folder / "bundle")
    if target is None or target_is_black(target) or any(p.clay is None for p in bundle.passes):
        return None
    ids = np.stack([p.object_id for p in bundle.passes])
    return bundle, target, ids, np.stack([p.clay for p in bundle.passes]).astype(np.float32) / 255.0


def reference_gains(shots: Sequence[Path]) -> dict:
    """{"picture_gain": [r, g, b], "swatch_gain": [...], "pictures": n, "swatches": n} over ``shots``."""
    ratios: dict[bool, list[np.ndarray]] = {True: [], False: []}
    for folder in shots:
        if (shot := _shot(folder)) is None:
            continue
        bundle, target, ids, clay = shot
        albedos = shot_albedos(target, ids, clay)
        for object_id, image in bundle.reference_images.items():
            if object_id in albedos:
                colour, picture = subject_colour(image)
                ratios[picture].append(np.maximum(albedos[object_id], 1e-3) / np.maximum(colour, 1e-3))
    every = ratios[True] + ratios[False]
    if not every:
        raise ValueError("none of the shots has a referenced object in view of a visible target with a clay pass")
    gain = {kind: np.median(found or every, 0).round(3).tolist() for kind, found in ratios.items()}
    return {"picture_gain": gain[True], "swatch_gain": gain[False],
            "pictures": len(ratios[True]), "swatches": len(ratios[False])}


def anchor_weight_psnr(generate: Callable, shots: Sequence[Path], gains: dict,
                       weights: Sequence[float] = WEIGHTS, progress: Callable[[int, int], None] | None = None
                       ) -> dict[float, float]:
    """Weight -> mean PSNR (dB) of the locked clips against the targets. ``generate(bundle)`` returns the clip
    without the lock, (F, H, W, 3) in [0, 1]."""
    scores: dict[float, list[float]] = {w: [] for w in weights}
    for done, folder in enumerate(shots, 1):
        if (shot := _shot(folder)) is not None:
            bundle, target, ids, clay = shot
            clip = generate(bundle)
            anchors = reference_anchors(bundle.reference_images, gains)
            for weight in weights:
                scores[weight].append(psnr(lock_object_colours(clip, ids, clay, anchors, weight), target))
        if progress is not None:
            progress(done, len(shots))
    if not scores[weights[0]]:
        raise ValueError("none of the shots has a visible target and a clay pass to calibrate on")
    return {w: float(np.mean(s)) for w, s in scores.items()}
