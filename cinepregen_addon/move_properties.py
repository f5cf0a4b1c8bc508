"""``shot.move``: the shot's camera move as real properties (units, ranges, tooltips), made from the move library's
own parameter specs (``core.camera_moves.PARAM_SPECS``).

They hold no values of their own: each reads and writes the shot's ``move_json`` (the one stored form, a
``MoveSpec``) through get/set callbacks, so files saved before these properties existed show their moves, a script
that writes ``move_json`` is seen at once, and there is nothing to keep in step. Each change re-keys the camera;
a move that cannot be made (a dolly zoom through its subject) leaves the keys and says why in ``move_note``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import bpy
import numpy as np
from bpy.props import BoolProperty, EnumProperty, FloatProperty, FloatVectorProperty, IntProperty

from .core.camera_moves import EASINGS, MOVE_PARAMS, PARAM_SPECS, SHAKE_SPECS, HandheldShake, MoveSpec
from .core.camera_pose import euler_to_matrix
from .render_passes import metres_per_unit

_DEFAULTS = {key: next(p[key] for p in MOVE_PARAMS.values() if key in p) for key in PARAM_SPECS}
EASING_ITEMS = [(key, key.replace("_", " ").title(), f"Progress of the move over the shot: {key.replace('_', ' ')}")
                for key in EASINGS]


def shot_of(move_group):
    """The shot a ``shot.move`` group belongs to."""
    return move_group.id_data.path_resolve(move_group.path_from_id().rsplit(".", 1)[0])


def _spec(shot) -> MoveSpec:
    """The shot's move; JSON the artist is still typing by hand reads as a static move (a draw must not fail)."""
    from .moves import shot_move_spec  # moves imports this module for its easing items

    try:
        return shot_move_spec(shot)
    except (ValueError, TypeError):
        return MoveSpec()


def _store(shot, **changes) -> None:
    """Write a changed move into ``move_json`` and key the camera with it."""
    from . import moves

    data = {**_spec(shot).to_dict(), **changes}
    shot.move_json = json.dumps(MoveSpec.from_dict(data).to_dict())
    shot.move_note = ""
    if shot.camera is None:
        return
    try:
        moves.apply_shot_move(bpy.context.scene, shot)
    except ValueError as error:
        shot.move_note = f"not keyed: {error}"


def _set_param(shot, key: str, value) -> None:
    spec = _spec(shot)
    if key not in MOVE_PARAMS[spec.kind]:
        raise ValueError(f"{key} is not a parameter of a {spec.kind} move")
    _store(shot, params={**spec.params, key: value})


def _start_target(shot) -> list[float]:
    """The point ``target_distance`` ahead of the shot's start view (where the move's centre is without a target)."""
    distance = _spec(shot).resolved_params().get("target_distance", _DEFAULTS["target_distance"])
    view = -euler_to_matrix(shot.start_rotation)[:, 2]
    return [float(v) for v in np.asarray(shot.start_location) + view * distance / metres_per_unit(shot.id_data)]


def _in_scene_units(getter_setter):
    """A length the move stores in metres, read and written in scene units, which Blender shows in the scene's unit
    system (a set built in centimetres, unit scale 0.01, shows a 2 m dolly as 2 m, not 2 cm)."""
    get, set_ = getter_setter

    def get_units(self):
        return get(self) / metres_per_unit(shot_of(self).id_data)

    def set_units(self, value):
        set_(self, value * metres_per_unit(shot_of(self).id_data))

    return get_units, set_units


def _scalar(key: str, to_ui=lambda v: v, from_ui=lambda v: v):
    def get(self):
        value = _spec(shot_of(self)).resolved_params().get(key, _DEFAULTS[key])
        return to_ui(value)

    def set_(self, value):
        _set_param(shot_of(self), key, from_ui(value))

    return get, set_


def _point(key: str):
    def get(self):
        shot = shot_of(self)
        value = _spec(shot).resolved_params().get(key)
        if value is not None:
            return value
        return _start_target(shot) if key == "target" else (0.0, 0.0, 0.0)

    def set_(self, value):
        _set_param(shot_of(self), key, [float(v) for v in value])

    def get_used(self):
        return _spec(shot_of(self)).resolved_params().get(key) is not None

    def set_used(self, used):
        shot = shot_of(self)
        if not used:
            _set_param(shot, key, None)
        elif key == "target":
            _set_param(shot, key, _start_target(shot))
        else:  # a follow offset starts as the camera's offset from the subject at the first frame
            subject = shot.subject.matrix_world.translation if shot.subject is not None else (0.0, 0.0, 0.0)
            _set_param(shot, key, [float(a - b) for a, b in zip(shot.start_location, subject, strict=True)])

    return get, set_, get_used, set_used


def _easing_get(self):
    return list(EASINGS).index(_spec(shot_of(self)).easing)


def _easing_set(self, index):
    _store(shot_of(self), easing=list(EASINGS)[index])


def _shake_field(key: str, to_ui=lambda v: v, from_ui=lambda v: v):
    default = getattr(HandheldShake(), key)

    def get(self):
        shake = _spec(shot_of(self)).shake
        return to_ui(getattr(shake, key) if shake is not None else default)

    def set_(self, value):
        shot = shot_of(self)
        shake = _spec(shot).to_dict()["shake"] or asdict(HandheldShake())
        _store(shot, shake={**shake, key: from_ui(value)})

    return get, set_


def _shake_used_get(self):
    return _spec(shot_of(self)).shake is not None


def _shake_used_set(self, used):
    _store(shot_of(self), shake=asdict(HandheldShake()) if used else None)


def _float(key: str, spec, getter_setter, **extra):
    get, set_ = _in_scene_units(getter_setter) if spec.unit == "LENGTH" else getter_setter
    options = dict(name=spec.label, description=spec.description, soft_min=spec.soft_min, soft_max=spec.soft_max,
                   get=get, set=set_, **extra)
    if spec.unit == "LENGTH":
        return FloatProperty(unit="LENGTH", **options)
    if spec.unit == "ANGLE":  # stored in degrees, shown in the scene's rotation units
        options.update(soft_min=math.radians(spec.soft_min), soft_max=math.radians(spec.soft_max))
        return FloatProperty(subtype="ANGLE", **options)
    if spec.unit == "LENS":
        return FloatProperty(unit="CAMERA", min=1.0, **options)
    return FloatProperty(**options)


def _annotations() -> dict:
    """One property per editable parameter of any move, plus easing and handheld shake."""
    found = {"easing": EnumProperty(name="Easing", items=EASING_ITEMS, get=_easing_get, set=_easing_set,
                                    description="How the move speeds up and slows down over the shot")}
    for key, spec in PARAM_SPECS.items():
        if spec.unit == "POINT":
            get, set_, get_used, set_used = _point(key)
            found[key] = FloatVectorProperty(name=spec.label, description=spec.description, size=3,
                                             subtype="TRANSLATION", get=get, set=set_)
            found[f"use_{key}"] = BoolProperty(name=f"Use {spec.label}", description=spec.description,
                                               get=get_used, set=set_used)
        elif spec.unit == "BOOL":
            found[key] = BoolProperty(name=spec.label, description=spec.description, get=_scalar(key)[0],
                                      set=_scalar(key)[1])
        elif spec.unit == "ANGLE":
            found[key] = _float(key, spec, _scalar(key, math.radians, math.degrees))
        else:
            minimum = {"min": 0.001} if key in ("target_distance",) else {}
            found[key] = _float(key, spec, _scalar(key, float, float), **minimum)
    found["use_shake"] = BoolProperty(name="Handheld Shake", get=_shake_used_get, set=_shake_used_set,
                                      description="Layer a seeded, smooth handheld wobble over the move")
    for key, spec in SHAKE_SPECS.items():
        name = f"shake_{key}"
        if key == "seed":
            get, set_ = _shake_field(key, int, int)
            found[name] = IntProperty(name=spec.label, description=spec.description, min=0, get=get, set=set_)
        elif spec.unit == "ANGLE":
            found[name] = _float(name, spec, _shake_field(key, math.radians, math.degrees), min=0.0)
        else:
            found[name] = _float(name, spec, _shake_field(key, float, float),
                                 min=0.01 if key == "frequency_hz" else 0.0)
    return found


def shown_parameters(shot) -> list[str]:
    """The ``shot.move`` properties of the shot's current move, in the library's order."""
    kind = _spec(shot).kind
    return [key for key in MOVE_PARAMS[kind] if key in PARAM_SPECS]


CINEPREGEN_PG_move = type("CINEPREGEN_PG_move", (bpy.types.PropertyGroup,), {
    "__annotations__": _annotations(),
    "__doc__": "The shot's camera move as properties over its move_json (see the module docstring).",
})
