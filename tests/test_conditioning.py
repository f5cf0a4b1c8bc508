"""What the DiT is shown of a bundle does not depend on the bundle's size where the scene is the same."""

from __future__ import annotations

import numpy as np
import torch

from backend.conditioning import id_edges, working_id_edges


def test_id_edges_reach_the_dit_with_one_weight_whatever_the_bundles_size():
    """Training made the DiT's edge channel from bundles of twice the working size. A bundle at the working size
    (128x72 for previs-tiny) and one at four times it must show the same edges as that: found at the bundle's own
    size, the small one's bands weighed twice as much."""
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 4, size=(3, 9, 16))
    working = torch.from_numpy(np.kron(blocks, np.ones((1, 4, 4), np.int64)))  # (3, 36, 64): the working size
    twice = working.repeat_interleave(2, 1).repeat_interleave(2, 2)
    four_times = twice.repeat_interleave(2, 1).repeat_interleave(2, 2)
    as_trained = working_id_edges(twice, 36, 64)
    torch.testing.assert_close(working_id_edges(working, 36, 64), as_trained)
    torch.testing.assert_close(working_id_edges(four_times, 36, 64), as_trained)
    own_size = torch.from_numpy(id_edges(working.numpy()))
    assert own_size.sum() > 1.8 * as_trained.sum() > 0  # what the working-size bundle showed before: bands of 2
