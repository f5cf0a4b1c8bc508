"""A rigged character from someone else's file arrives as several meshes one armature deforms (the farmer glTF: body,
head, pants, feet). It must render as one object of the ID pass, with one mask and one reference, bound to its rig
or to whichever of its meshes the artist clicked, as the model learnt characters (the training scenes join such
parts); rigid parts carried on bones and the training assets themselves stay as they were."""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np
import pytest

from backend.blender.addon import enable_addon_in_process
from backend.training.assets import HELDOUT_ASSETS, TRAIN_ASSETS, default_asset_dir, import_asset
from cinepregen_addon.core import shot_bundle
from cinepregen_addon.object_ids import ensure_object_ids, object_units, scene_objects
from cinepregen_addon.render_passes import ShotRenderSpec, render_shot_bundle

REFERENCE = Path(__file__).resolve().parents[1] / "backend" / "assets" / "references" / "hero.png"


def farmer_scene():
    """The farmer glTF as the importer leaves it, before a camera that sees all of it."""
    enable_addon_in_process()
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    assert bpy.ops.import_scene.gltf(filepath=str(default_asset_dir() / "farmer.glb")) == {"FINISHED"}
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(camera)
    camera.location, camera.rotation_euler = (0.0, -5.0, 0.9), (np.pi / 2, 0.0, 0.0)
    return scene, next(o for o in scene.objects if o.type == "ARMATURE")


def rendered(scene, tmp_path):
    spec = ShotRenderSpec("Farmer", "Camera", 1, 2, resolution=(48, 32), include_clay=False)
    return shot_bundle.read_bundle(render_shot_bundle(scene, spec, tmp_path / "bundle", overwrite=True))


@pytest.mark.parametrize("bound_to", ["CharacterArmature", "Farmer_Head"])
def test_a_character_of_several_skinned_meshes_is_one_object_with_one_reference(tmp_path, bound_to):
    scene, rig = farmer_scene()
    parts = [o for o in scene_objects(scene) if o.type == "MESH"]
    assert sorted(p.name for p in parts) == ["Farmer_Body", "Farmer_Feet", "Farmer_Head", "Farmer_Pants"]
    ids = ensure_object_ids(scene)
    assert {ids[p.name_full] for p in parts} == {rig["cinepregen_id"]}  # kept on the rig, shared by its meshes
    bpy.data.objects[bound_to].cinepregen_reference = str(REFERENCE)

    bundle = rendered(scene, tmp_path)
    assert [(o.id, o.name) for o in bundle.objects] == [(rig["cinepregen_id"], "CharacterArmature")]
    assert set(bundle.reference_images) == {rig["cinepregen_id"]}  # the whole character wears the picture
    mask = bundle.passes[0].object_id == rig["cinepregen_id"]
    assert mask.sum() > 0.05 * mask.size and mask[:mask.shape[0] // 3].any() and mask[-mask.shape[0] // 3:].any()
    assert ensure_object_ids(scene) == ids  # stable


def test_the_training_assets_render_as_they_were_trained_one_object_a_mesh():
    """The training scenes join a character's skinned meshes and keep rigid bone-carried parts apart: those scenes
    (and so the held-out set and the model's card) are unchanged, every mesh its own object."""
    enable_addon_in_process()
    for i, asset in enumerate(TRAIN_ASSETS + HELDOUT_ASSETS):
        bpy.ops.wm.read_homefile(use_empty=True)
        scene = bpy.context.scene
        meshes, _root = import_asset(bpy, scene, default_asset_dir(), asset, f"Asset{i}", (0.0, 0.0), 0.0, 1.7,
                                     1, 2)
        units = object_units(scene_objects(scene))
        assert all(len(parts) == 1 for _named_by, parts in units.values()), asset.file
        assert sorted(units) == sorted(m.name_full for m in meshes), asset.file


def test_a_linked_character_takes_the_reference_bound_to_the_empty_it_arrives_as(scene, tmp_path):
    """File > Link brings a character in as an empty instancing its collection: that empty is what the artist
    clicks, so a reference bound to it dresses the character. What renders nothing (a light, a plain empty) is
    refused in one line before the file browser opens."""
    from test_addon import _cube_object

    character = bpy.data.collections.new("Character")
    scene.collection.children.link(character)
    _cube_object("Body", (0.0, 0.0, 0.6), 1.2, character)
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "library.blend"))

    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    with bpy.data.libraries.load(str(tmp_path / "library.blend"), link=True) as (_source, linked):
        linked.collections = ["Character"]
    arrives_as = bpy.data.objects.new("Character", None)
    arrives_as.instance_type, arrives_as.instance_collection = "COLLECTION", linked.collections[0]
    scene.collection.objects.link(arrives_as)
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    camera.location, camera.rotation_euler = (0.0, -8.0, 0.6), (np.pi / 2, 0.0, 0.0)
    scene.collection.objects.link(camera)
    assert bpy.ops.cinepregen.bind_reference(filepath=str(REFERENCE), object_name="Character") == {"FINISHED"}
    bundle = rendered(scene, tmp_path)
    body = next(o for o in bundle.objects if o.name == "Body [library.blend]")
    assert set(bundle.reference_images) == {body.id}

    lamp = bpy.data.objects.new("Key", bpy.data.lights.new("Key", "AREA"))
    scene.collection.objects.link(lamp)
    for name in ("Key", "Camera"):
        with pytest.raises(RuntimeError, match=f"{name} .* renders nothing itself: bind the reference to the"):
            bpy.ops.cinepregen.bind_reference(filepath=str(REFERENCE), object_name=name)


def test_framing_one_mesh_of_a_character_frames_the_whole_character():
    """The artist picks the body as the shot's subject: Frame Subject frames the farmer head to feet, as it does
    when the rig is the subject."""
    from cinepregen_addon import moves, shots

    scene, rig = farmer_scene()
    poses = []
    for subject in (rig, bpy.data.objects["Farmer_Body"]):
        shot = shots.add_shot(scene, f"On {subject.name}", length=2)
        shot.frame_start, shot.frame_end = 1, 2  # the same pose of the character for both
        shot.subject, shot.shot_size, shot.camera_angle = subject, "FS", "EYE_LEVEL"
        poses.append(moves.frame_shot_subject(scene, shot))
    np.testing.assert_allclose(poses[1].location, poses[0].location, atol=1e-6)
    np.testing.assert_allclose(poses[1].rotation_euler, poses[0].rotation_euler, atol=1e-6)


def test_binding_through_any_mesh_of_a_character_sets_the_characters_one_reference(tmp_path):
    """Bound through the head, then through the body: the character wears the latest picture, kept on its rig;
    a picture left on one of its meshes (a file from before) gives way; clearing through a foot clears it all."""
    scene, rig = farmer_scene()
    other = REFERENCE.with_name("robot.png")
    bpy.data.objects["Farmer_Pants"].cinepregen_reference = str(other)
    for part, picture in (("Farmer_Head", REFERENCE), ("Farmer_Body", other)):
        assert bpy.ops.cinepregen.bind_reference(filepath=str(picture), object_name=part) == {"FINISHED"}
        assert rig.cinepregen_reference == str(picture)
        assert not any(bpy.data.objects[p].cinepregen_reference
                       for p in ("Farmer_Body", "Farmer_Feet", "Farmer_Head", "Farmer_Pants"))
    bundle = rendered(scene, tmp_path)
    from backend.bundle_io import read_reference_image

    [image] = bundle.reference_images.values()
    np.testing.assert_array_equal(image, read_reference_image(other))
    assert bpy.ops.cinepregen.clear_reference(object_name="Farmer_Feet") == {"FINISHED"}
    assert rig.cinepregen_reference == ""
