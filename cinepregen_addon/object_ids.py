"""Stable object IDs: every object a shot's render shows gets one, kept with the file and used as its pass index,
so the ID pass names the same object in every shot of the board and after the file is reopened.

Objects are told apart by ``name_full``: a character linked from a library may share its name with a local object
("Body" and "Body [chars.blend]"). A local object keeps its ID on itself (custom property ``cinepregen_id``); a
linked object cannot (it is read from its library at every load), nor can a library override (Blender keeps only
overridable RNA properties of an override), so theirs are kept on the scene (``LINKED_IDS_PROPERTY``, JSON by
``name_full``)."""

from __future__ import annotations

import json

import bpy

from .keyframes import fcurves_of

ID_PROPERTY = "cinepregen_id"
LINKED_IDS_PROPERTY = "cinepregen_linked_ids"
GEOMETRY_TYPES = {"MESH", "CURVE", "CURVES", "SURFACE", "META", "FONT", "POINTCLOUD"}


def object_named(objects, name: str):
    """The object called ``name`` in ``objects`` (``bpy.data.objects``, ``scene.objects``), else the one whose
    ``name_full`` it is ("Camera [layout.blend]": a linked one beside a local "Camera"); None if neither."""
    return objects.get(name) or next((o for o in objects if o.name_full == name), None)


def instanced_collection(obj):
    """The collection ``obj`` instances (an empty a linked character or prop arrives as), or None."""
    return obj.instance_collection if obj.instance_type == "COLLECTION" else None


def _renderable_objects(objects, seen: set[str], shapes: dict) -> list:
    """Geometry objects that render, including those a collection instance brings in (they render with their own
    index). Objects hidden from the render and bone display shapes (``shapes``: the helper meshes armatures, and the
    glTF importer's rigs, draw bones with) are not part of the shot."""
    found = []
    for obj in objects:
        if obj.name_full in seen:
            continue
        seen.add(obj.name_full)
        if obj.type in GEOMETRY_TYPES and (not obj.hide_render or _animated(obj, "hide_render")) \
                and obj.name_full not in shapes:
            found.append(obj)
        if instanced_collection(obj) is not None:
            found += _renderable_objects(instanced_collection(obj).all_objects, seen, shapes)
    return found


def _animated(obj, data_path: str) -> bool:
    """Whether ``data_path`` of ``obj`` is keyed: a prop whose render visibility pops it in mid-shot is hidden at
    the frame the IDs are given, and would read as background once it shows."""
    fcurves = fcurves_of(obj)
    return fcurves is not None and fcurves.find(data_path) is not None


def scene_objects(scene) -> list:
    """Every object the scene's render shows with its own pass index: ``_renderable_objects`` and the sources of
    instances made by particles or geometry nodes, which render even when hidden themselves or kept out of the
    scene (hair and scatter setups): without an ID they read as background where they are seen."""
    seen: set[str] = set()
    shapes = bone_shapes()
    found = _renderable_objects(scene.objects, seen, shapes)
    sources = []
    for obj in scene.objects:  # particles: hair shows as strands in the viewport, so ask their settings
        for system in getattr(obj, "particle_systems", ()):
            settings = system.settings
            if settings.render_type == "OBJECT" and settings.instance_object is not None:
                sources.append(settings.instance_object)
            elif settings.render_type == "COLLECTION" and settings.instance_collection is not None:
                sources += settings.instance_collection.all_objects
    if bpy.context.scene == scene:  # geometry nodes: what the evaluated scene instances
        sources += [i.object.original for i in bpy.context.evaluated_depsgraph_get().object_instances
                    if i.is_instance]
    for source in sources:
        if source.type in GEOMETRY_TYPES and source.name_full not in seen and source.name_full not in shapes:
            seen.add(source.name_full)
            found.append(source)
    return found


def bone_shapes() -> dict:
    """The objects pose bones use as custom display shapes, by ``name_full``."""
    return {bone.custom_shape.name_full: bone.custom_shape for obj in bpy.data.objects
            if obj.type == "ARMATURE" and obj.pose for bone in obj.pose.bones if bone.custom_shape is not None}


def _keeps_own_properties(obj) -> bool:
    """Whether a custom property set on ``obj`` is saved with this file (not on linked objects nor overrides)."""
    return obj.library is None and obj.override_library is None


def _linked_ids(scene) -> dict:
    try:
        stored = json.loads(scene.get(LINKED_IDS_PROPERTY, "{}"))
    except (TypeError, ValueError):  # edited by hand into something else: the IDs are given again
        return {}
    return stored if isinstance(stored, dict) else {}


def _stored_id(obj, linked: dict) -> int | None:
    """The object's ID as kept with the file (``linked``: the scene's record, ``_linked_ids``), or None."""
    value = obj.get(ID_PROPERTY) if _keeps_own_properties(obj) else linked.get(obj.name_full)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def deforming_armature(obj):
    """The armature whose Armature modifier deforms ``obj`` (a skinned character's mesh), or None."""
    for modifier in getattr(obj, "modifiers", ()):
        if modifier.type == "ARMATURE" and modifier.show_render and modifier.object is not None \
                and modifier.object.type == "ARMATURE":
            return modifier.object
    return None


def reference_holder(obj):
    """Where a reference bound through ``obj`` is kept: for a mesh of a skinned character, its armature (a character
    has one reference, whichever of its meshes the artist clicked), else the object itself."""
    return deforming_armature(obj) or obj


def deformed_meshes(rig) -> list:
    """The objects ``rig`` deforms (a character's body, head, clothes)."""
    return [obj for obj in bpy.data.objects if deforming_armature(obj) is rig]


def object_units(objects) -> dict[str, tuple]:
    """The objects as the ID pass tells them apart: ``{name_full: (named_by, parts)}``. A rigged character whose
    armature deforms several meshes (as glTF and FBX characters arrive: body, head, clothes) is one unit named by its
    armature: one ID, one mask, one reference, as the model learnt characters (the training scenes join such parts,
    ``backend.training.assets``). Every other object, rigid parts carried on bones among them, is a unit of its own."""
    deformed: dict[str, list] = {}
    for obj in objects:
        rig = deforming_armature(obj)
        if rig is not None:
            deformed.setdefault(rig.name_full, []).append(obj)
    units: dict[str, tuple] = {}
    for obj in objects:
        rig = deforming_armature(obj)
        if rig is not None and len(deformed[rig.name_full]) > 1:
            units.setdefault(rig.name_full, (rig, []))[1].append(obj)
        else:
            units[obj.name_full] = (obj, [obj])
    return units


def instanced_by(scene) -> dict[str, object]:
    """Objects a collection instance brings into the scene (a linked character arrives as an empty instancing its
    collection), by ``name_full``, each with the scene's empty that brings it in: what the artist clicks."""
    found: dict[str, object] = {}

    def walk(collection, empty, depth: int = 0) -> None:
        for obj in collection.all_objects:
            found.setdefault(obj.name_full, empty)
            if instanced_collection(obj) is not None and depth < 16:
                walk(instanced_collection(obj), empty, depth + 1)

    for obj in scene.objects:
        if instanced_collection(obj) is not None:
            walk(instanced_collection(obj), obj)
    return found


def reference_problem(obj) -> str | None:
    """Why a reference bound to ``obj`` would dress nothing (None: it would): only what renders, a character's
    armature and a collection instance hold references (``render_passes.unit_reference``)."""
    if obj.type in GEOMETRY_TYPES or obj.type == "ARMATURE" or instanced_collection(obj) is not None:
        return None
    return (f"{obj.name} ({obj.type.lower()}) renders nothing itself: bind the reference to the character or prop "
            "(its mesh, its armature, or the collection instance that brings it in)")


def objects_without_ids(scene) -> list[str]:
    """Renderable objects (characters as one, ``object_units``) that have no stable ID yet (the next render gives
    them one)."""
    linked = _linked_ids(scene)
    return [name for name, (named_by, _parts) in object_units(scene_objects(scene)).items()
            if _stored_id(named_by, linked) is None]


def ensure_object_ids(scene, objects: list | None = None) -> dict[str, int]:
    """Give every renderable object of the scene (instanced ones too; ``objects``: ``scene_objects(scene)`` when the
    caller has them) a stable ID; the meshes of one character share their armature's (``object_units``).

    IDs are kept with the file (``_stored_id``, on the character's armature for a character), so they survive saving
    and are the same in every shot of the board; the answer is keyed by each object's ``name_full``. Existing IDs
    are kept; a duplicated object, which copies its source's property, gets a new one. They become pass indices
    only while the passes render (``use_ids_as_pass_indices``): the artist's own pass indices, which their
    compositing masks read, stay as they were.
    """
    units = object_units(scene_objects(scene) if objects is None else objects)
    heads = [units[name][0] for name in sorted(units)]
    linked = _linked_ids(scene)
    ids: dict[str, int] = {}
    taken: set[int] = set()
    new = []
    for obj in heads:
        value = _stored_id(obj, linked)
        if value is not None and 0 < value < 32768 and value not in taken:
            ids[obj.name_full] = value
            taken.add(value)
        else:
            new.append(obj)
    next_id = max(taken, default=0) + 1
    for obj in new:
        while next_id in taken:
            next_id += 1
        if next_id >= 32768:
            raise ValueError("too many objects: pass indices stop at 32767")
        if _keeps_own_properties(obj):
            obj[ID_PROPERTY] = next_id
        else:
            linked[obj.name_full] = next_id
        ids[obj.name_full] = next_id
        taken.add(next_id)
    if any(not _keeps_own_properties(obj) for obj in new):
        scene[LINKED_IDS_PROPERTY] = json.dumps(linked, sort_keys=True)
    return {part.name_full: ids[name] for name, (_named_by, parts) in units.items() for part in parts}


def use_ids_as_pass_indices(overrides, ids: dict[str, int]) -> None:
    """Set each object's pass index to its ID for the duration of a render (``render_settings.Overrides``), and
    every other object's to 0: an index the artist gave something without an ID (a volume, grease pencil) must not
    read as another object's ID."""
    for obj in bpy.data.objects:
        index = ids.get(obj.name_full, 0)
        if obj.pass_index != index:
            overrides.set(obj, "pass_index", index)
