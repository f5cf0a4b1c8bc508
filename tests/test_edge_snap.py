"""Edge snapping puts painted object edges on the ID pass's edges and leaves the rest of the painting alone."""

import numpy as np
import pytest
import torch

from backend.pipelines.edge_snap import snap_to_object_edges


def _two_objects(bleed: int = 2):
    """A frame whose left object (ID 1, red) was painted ``bleed`` pixels into the right one (ID 7, blue), with a
    gradient inside both so that filling is told from copying."""
    height, width, edge = 12, 24, 11
    ids = np.where(np.arange(width) < edge, 1, 7)[None, None].repeat(height, axis=1)  # (1, H, W)
    frame = torch.zeros(1, 3, height, width)
    frame[0, 0, :, : edge + bleed] = 1.0
    frame[0, 2, :, edge + bleed:] = 1.0
    frame[0, 1] = torch.linspace(0.0, 0.2, width)
    return frame, ids, edge


def test_a_colour_that_bled_across_an_object_edge_is_put_back_on_the_edge():
    frame, ids, edge = _two_objects(bleed=2)
    snapped = snap_to_object_edges(frame, ids, radius=2)
    red, blue = snapped[0, 0], snapped[0, 2]
    assert torch.all(red[:, :edge] == 1.0) and torch.all(red[:, edge:] == 0.0)  # the step is where the IDs change
    assert torch.all(blue[:, edge:] == 1.0)
    far = [c for c in range(24) if abs(c - edge) > 2 and abs(c - (edge - 1)) > 2]
    assert torch.equal(snapped[..., far], frame[..., far])  # beyond the band nothing moves
    green = snapped[0, 1, 0]
    assert green[edge] == pytest.approx(green[edge + 3].item(), abs=0.03)  # filled from its own side, nearby
    assert green[edge - 1] == pytest.approx(green[edge - 4].item(), abs=0.03)


def test_a_part_thinner_than_the_band_keeps_its_painting():
    height, width = 10, 20
    ids = np.zeros((1, height, width), dtype=np.int32)
    ids[0, :, 9] = 3  # a one-pixel pole: every pixel of it is next to another object
    frame = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    snapped = snap_to_object_edges(frame, ids, radius=2)
    assert torch.equal(snapped[..., 9], frame[..., 9])


def test_radius_zero_is_off_and_a_wrong_id_pass_is_refused():
    frame, ids, _ = _two_objects()
    assert snap_to_object_edges(frame, ids, radius=0) is frame
    with pytest.raises(ValueError, match="object_ids"):
        snap_to_object_edges(frame, ids[:, :-1], radius=2)
