"""The board's view of the backend's models (pure: no bpy)."""

from cinepregen_addon.core.local_adjustments import LocalAdjustments, Offset
from cinepregen_addon.core.model_choice import frame_note, generated_frames, pickable_models


def test_4k_plus_1_models_round_up_and_say_so():
    assert [generated_frames(n, "4k+1") for n in (1, 2, 5, 6, 48, 81)] == [1, 5, 5, 9, 49, 81]
    assert generated_frames(48, "any") == 48 and frame_note(48, "any") == ""
    assert frame_note(48, "4k+1") == "this model generates 49 frames (4k+1) and keeps the first 48"
    assert frame_note(81, "4k+1") == ""


def test_models_that_cannot_be_served_are_not_offered():
    health = {"models": [{"name": "previs-tiny"}, {"name": "broken", "error": "no config"}, "junk", {"x": 1}]}
    assert [m["name"] for m in pickable_models(health)] == ["previs-tiny"]
    assert pickable_models({}) == []


def test_removing_one_local_adjustment_keeps_the_others():
    layer = LocalAdjustments(offsets=[Offset(4, (0.1, 0, 0)), Offset(9, (0, 0.2, 0))], time_remap=[(0.5, 0.4)])
    assert [o.frame for o in layer.without("offset", 1).offsets] == [4]
    assert layer.without("retime", 0).time_remap == [] and len(layer.without("retime", 0).offsets) == 2
    assert [row[0] for row in layer.rows()] == ["offset", "offset", "retime"]
