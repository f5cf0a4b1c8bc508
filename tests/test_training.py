"""Dataset building and training at toy size: real Cycles renders, a real (tiny) model, a real resume."""

import json

import numpy as np
import pytest
from helpers import tiny_pipeline

from backend.cli import main
from backend.pipelines.previs_pipeline import PrevisPipeline
from backend.training.colour_calibration import WEIGHTS
from backend.training.train import TrainConfig, learning_rate, refiner_following
from cinepregen_addon.core.shot_bundle import read_bundle


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    assert main(["dataset", "build", "--out", str(out), "--shots", "2", "--heldout", "1", "--frames", "3",
                 "--samples", "2", "--asset-share", "0"]) == 0
    return out


def test_dataset_has_bundles_targets_and_a_disjoint_heldout_split(dataset):
    shots = sorted((dataset / "train").glob("shot_*")) + sorted((dataset / "heldout").glob("shot_*"))
    assert len(shots) == 3
    for shot in shots:
        bundle = read_bundle(shot / "bundle")
        target = np.load(shot / "target.npz")["frames"]
        assert target.shape == (3, 144, 256, 3) and target.dtype == np.uint8 and target.std() > 5
        assert len(bundle.passes) == 3 and bundle.reference_images  # every object wears a look
        assert (bundle.width, bundle.height) == (256, 144)
        assert all(p.clay is not None and p.clay.std() > 1 for p in bundle.passes)  # the clay pass is rendered
    train_ids = {json.loads((s / "bundle" / "shot.json").read_text())["shot"]["scene_seed"] for s in shots[:2]}
    heldout_id = json.loads((shots[2] / "bundle" / "shot.json").read_text())["shot"]["scene_seed"]
    assert heldout_id not in train_ids


def test_dataset_build_is_reproducible_and_resumes(dataset, tmp_path, capsys):
    again = tmp_path / "again"
    assert main(["dataset", "build", "--out", str(again), "--shots", "1", "--heldout", "0", "--frames", "3",
                 "--samples", "2", "--asset-share", "0"]) == 0
    first = read_bundle(dataset / "train" / "shot_00000" / "bundle")
    np.testing.assert_array_equal(read_bundle(again / "train" / "shot_00000" / "bundle").passes[1].object_id,
                                  first.passes[1].object_id)
    mtime = (again / "train" / "shot_00000" / "target.npz").stat().st_mtime
    assert main(["dataset", "build", "--out", str(again), "--shots", "1", "--heldout", "0", "--frames", "3",
                 "--samples", "2", "--asset-share", "0"]) == 0
    assert (again / "train" / "shot_00000" / "target.npz").stat().st_mtime == mtime  # kept, not re-rendered
    assert main(["dataset", "build", "--out", str(again), "--shots", "1", "--frames", "4"]) == 2
    assert "built with frames=3, not 4" in capsys.readouterr().err


def test_train_logs_validates_resumes_and_saves_a_loadable_pipeline(dataset, tmp_path):
    run = tmp_path / "run"
    common = ["train", "--data", str(dataset), "--out", str(run), "--preset", "tiny-test", "--batch-size", "1",
              "--clip-frames", "2", "--context-frames", "1", "--val-every", "2", "--warmup", "1"]
    assert main([*common, "--steps", "5", "--stop-at", "3"]) == 0  # validated and saved at the stop
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "val_loss" in r] == [2, 3]
    assert all(np.isfinite(r["loss"]) for r in log)
    assert (run / "final").is_dir()
    assert main([*common, "--steps", "5"]) == 0  # resumes at step 3
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "val_loss" in r] == [2, 3, 4, 5]
    # the stop did not change the schedule: the rate at each step is that of a 5-step run
    config = TrainConfig(data=str(dataset), out=str(run), steps=5, warmup=1)
    assert [r["lr"] for r in log] == pytest.approx([learning_rate(r["step"] - 1, config) for r in log])
    pipeline = PrevisPipeline.from_pretrained(run / "final")
    assert pipeline.refiner is not None and pipeline.transformer.config.context_channels == 4
    clip = pipeline(read_bundle(dataset / "heldout" / "shot_00000" / "bundle"), num_inference_steps=1)
    assert clip.shape == (3, 144, 256, 3)


def test_reference_swap_scores_only_outside_the_swapped_object():
    import torch

    from backend.training.losses import swap_references

    generator = torch.Generator().manual_seed(0)
    references = torch.rand(3, 2, 3, 8, 8)
    masks = torch.zeros(3, 2, 4, 6, 10)
    masks[:, 0, :, :3] = 1.0  # object 0 covers the top half, object 1 a corner
    masks[:, 1, :, 4:, :2] = 1.0
    strengths = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])  # sample 2 has no referenced object
    batch = {"references": references, "object_masks": masks, "reference_strengths": strengths}

    swapped, weights = swap_references(batch, 1.0, generator)
    assert weights.shape == (3, 4, 1, 6, 10)
    for b in range(2):
        changed = [o for o in range(2) if not torch.equal(swapped[b, o], references[b, o])]
        assert len(changed) == 1  # exactly one object of a referenced sample wears another's look
        obj = changed[0]
        assert strengths[b, obj] == 1
        donors = [references[d, o] for d in range(3) for o in range(2) if strengths[d, o] and (d, o) != (b, obj)]
        assert any(torch.equal(swapped[b, obj], donor) for donor in donors)
        torch.testing.assert_close(weights[b, :, 0], 1.0 - masks[b, obj])
    assert torch.equal(swapped[2], references[2]) and torch.all(weights[2] == 1)

    unswapped, ones = swap_references(batch, 0.0, generator)
    assert torch.equal(unswapped, references) and torch.all(ones == 1)


def test_fine_tuning_starts_from_a_saved_pipeline_and_keeps_its_sampling(dataset, tmp_path):
    import torch

    common = ["--data", str(dataset), "--batch-size", "1", "--clip-frames", "2", "--context-frames", "1",
              "--steps", "1"]
    assert main(["train", *common, "--out", str(tmp_path / "base"), "--preset", "tiny-test"]) == 0
    start = PrevisPipeline.from_pretrained(tmp_path / "base" / "final")
    start.sampling["num_inference_steps"] = 3
    # as the previs models before albedo: they painted frames
    painted = type(start.transformer).from_config({**start.transformer.config, "prediction_type": "sample"})
    painted.load_state_dict(start.transformer.state_dict())
    start.transformer = painted
    start.save_pretrained(tmp_path / "start")
    refiner_config = tmp_path / "start" / "refiner" / "config.json"  # written before refiners had an albedo mode
    refiner_config.write_text(json.dumps({k: v for k, v in json.loads(refiner_config.read_text()).items()
                                          if k != "albedo"}))

    assert main(["train", *common, "--out", str(tmp_path / "tune"), "--init-from", str(tmp_path / "start"),
                 "--reference-swap", "1.0", "--warmup", "1"]) == 0
    tuned = PrevisPipeline.from_pretrained(tmp_path / "tune" / "final")
    assert tuned.sampling["num_inference_steps"] == 3
    assert tuned.transformer.config.prediction_type == "albedo" and tuned.refiner.config.albedo  # the preset's
    assert tuned.transformer.config.hidden_size == start.transformer.config.hidden_size == 32  # not the preset
    before = dict(start.transformer.named_parameters())
    assert any(not torch.equal(p, before[n]) for n, p in tuned.transformer.named_parameters())


def test_a_frame_refiner_turned_albedo_starts_as_the_albedo_lit_by_the_clay_pass():
    """Its residual lit the albedo; kept, the exact product with the clay pass would light it twice. Converted, it
    keeps its body and starts as bilinear albedo times clay, as a new albedo refiner would."""
    import torch

    from backend.conditioning import FULL_RES_CHANNELS
    from backend.models.frame_refiner import FrameRefiner, upsampled_frames

    torch.manual_seed(0)
    trained = FrameRefiner(width=8, num_blocks=1)
    for p in trained.parameters():  # as a trained frame refiner: every layer, the output layer too, non-zero
        torch.nn.init.normal_(p, std=0.1)
    albedo, guidance = torch.rand(2, 3, 9, 16) * 2 - 1, torch.rand(2, FULL_RES_CHANNELS, 18, 32) * 2 - 1
    assert not torch.allclose(trained(albedo, guidance), upsampled_frames(albedo, guidance, False), atol=1e-3)

    converted = refiner_following(trained, albedo=True)
    assert converted.config.albedo and refiner_following(converted, albedo=True) is converted
    torch.testing.assert_close(converted(albedo, guidance), upsampled_frames(albedo, guidance, True))
    torch.testing.assert_close(converted.body[0].conv1.weight, trained.body[0].conv1.weight)


def test_a_walking_gltf_character_is_one_object_with_a_picture_reference(tmp_path):
    """Held-out scenes take their subject from characters training never sees; a skinned character's parts are one
    object of the ID pass, its helper objects are gone, it walks, and its reference is a picture of it."""
    import bpy

    from backend.training.assets import HELDOUT_ASSETS, TRAIN_ASSETS, default_asset_dir
    from backend.training.dataset import DatasetConfig, build_shot

    assert default_asset_dir() is not None, "the shared asset pack (../shared/assets) is missing"
    assert not {a.file for a in TRAIN_ASSETS} & {a.file for a in HELDOUT_ASSETS}
    config = DatasetConfig(frames=3, resolution=(64, 36), target_samples=1, asset_share=1.0,
                           asset_dir=str(default_asset_dir()))
    shot = build_shot(tmp_path / "shot", 7, config, heldout=True)
    bundle = read_bundle(shot / "bundle")
    assert bundle.shot["subject_asset"] in {a.file for a in HELDOUT_ASSETS}
    names = [o.name for o in bundle.objects]
    assert "Character" in names and not any(n.startswith("Icosphere") for n in names)
    character = next(o.id for o in bundle.objects if o.name == "Character")
    assert sum((p.object_id == character).sum() for p in bundle.passes) > 0
    picture = bundle.reference_images[character]
    assert picture.shape[:2] == (96, 96) and picture.std() > 10
    joined = bpy.data.objects["Character"]  # the scene is still loaded: every held-out character is skinned
    assert any(m.type == "ARMATURE" and m.object is not None for m in joined.modifiers)


def test_a_multi_part_skinned_character_is_joined_into_one_walking_object():
    """The farmer comes as four skinned meshes, an armature and a bone-shape helper: one object, scaled to the asked
    height, standing on the floor, walking along its heading while its walk clip plays."""
    import bpy
    from mathutils import Vector

    from backend.training.assets import TRAIN_ASSETS, default_asset_dir, import_asset

    farmer = next(a for a in TRAIN_ASSETS if a.file == "farmer.glb")
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    meshes, root = import_asset(bpy, scene, default_asset_dir(), farmer, "Hero", (1.0, 2.0), 0.0, 1.5, 1, 10)
    assert [m.name for m in meshes] == ["Hero"]
    assert not [o for o in scene.objects if o.name.startswith("Icosphere")]
    armature = next(o for o in scene.objects if o.type == "ARMATURE")

    def box(frame):
        scene.frame_set(frame)
        depsgraph = bpy.context.evaluated_depsgraph_get()
        evaluated = meshes[0].evaluated_get(depsgraph)
        points = np.array([tuple(evaluated.matrix_world @ v.co) for v in evaluated.to_mesh().vertices])
        evaluated.to_mesh_clear()
        return points.min(0), points.max(0)

    low, high = box(1)
    assert abs((high[2] - low[2]) - 1.5) < 0.2 and abs(low[2]) < 0.05  # its height, on the floor
    assert np.hypot(*((low[:2] + high[:2]) / 2 - (1.0, 2.0))) < 0.3
    start = Vector(root.location)
    scene.frame_set(10)
    assert (Vector(root.location) - start).length == pytest.approx(farmer.speed_m_per_frame * 9, rel=1e-3)
    assert armature.animation_data.action.name.startswith("Walk")
    scene.frame_set(1)
    pose1 = [tuple(b.matrix.translation) for b in armature.pose.bones]
    scene.frame_set(6)
    assert pose1 != [tuple(b.matrix.translation) for b in armature.pose.bones]  # the walk cycle moves the bones


def test_calibrate_colours_measures_the_reference_anchor_and_writes_it(dataset, tmp_path, capsys):
    """On the toy dataset's rendered training shots: gains from its references to its Cycles targets, a weight
    chosen among those tried, written into pipeline.json, which the pipeline then reads."""
    weights = tiny_pipeline().save_pretrained(tmp_path / "weights")
    assert main(["calibrate-colours", "--data", str(dataset), "--weights", str(weights), "--shots", "1"]) == 0
    printed = capsys.readouterr().out
    assert "picture and" in printed and "weight 0.50: mean PSNR" in printed and "pass --write" in printed
    assert json.loads((weights / "pipeline.json").read_text())["reference_colours"] is None  # not written
    assert main(["calibrate-colours", "--data", str(dataset), "--weights", str(weights), "--write"]) == 0
    calibration = PrevisPipeline.from_pretrained(weights).sampling["reference_colours"]
    assert calibration["weight"] in WEIGHTS
    for gain in (calibration["picture_gain"], calibration["swatch_gain"]):
        assert len(gain) == 3 and all(0.2 < g < 5 for g in gain)
    assert main(["calibrate-colours", "--data", str(dataset), "--weights", str(weights),
                 "--weigh-on", str(tmp_path)]) == 2
    assert "no train shots in" in capsys.readouterr().err
    assert main(["calibrate-colours", "--data", str(dataset), "--weights", str(tmp_path / "none")]) == 2
    assert "no previs model weights" in capsys.readouterr().err


def test_a_drawn_dolly_stops_short_of_a_subject_framed_close():
    """Shot 87 of the default dataset drew a 1.05 m dolly zoom for a close-up framed 0.38 m from its subject."""
    from backend.training.dataset import DOLLY_REACH, _stop_short_of
    from cinepregen_addon.core.camera_moves import MoveSpec, sample_move
    from cinepregen_addon.core.camera_pose import euler_to_matrix
    from cinepregen_addon.core.framing import frame_subject

    subject = (0.0, 0.0, 0.4)
    pose = frame_subject(subject, 0.3, "CU", "EYE_LEVEL", 35.0)
    depth = float(np.dot(np.subtract(subject, pose.location), -euler_to_matrix(pose.rotation_euler)[:, 2]))
    move = {"kind": "dolly_zoom", "params": {"distance": 1.05, "target": list(subject)}}
    with pytest.raises(ValueError, match="would reach the subject"):
        sample_move(MoveSpec.from_dict(move), pose, 1, 4)
    _stop_short_of(move, pose, subject)
    assert move["params"]["distance"] == pytest.approx(DOLLY_REACH * depth)
    samples = sample_move(MoveSpec.from_dict(move), pose, 1, 4)
    assert min(np.linalg.norm(np.subtract(subject, s.location)) for s in samples) > 0.3 * depth
    backward = {"kind": "dolly", "params": {"distance": -1.5}}
    _stop_short_of(backward, pose, subject)
    assert backward["params"]["distance"] == -1.5  # a dolly out is never shortened


def test_a_drawn_dolly_zoom_stops_short_along_the_view_of_a_low_close_up():
    """A low-angle close-up aims above the subject's middle from the floor: the middle's depth along the view is a
    third of its distance, and 0.6 of the distance would still reach it."""
    from backend.training.dataset import MIN_CAMERA_HEIGHT_M, _stop_short_of
    from cinepregen_addon.core.camera_moves import MoveSpec, sample_move
    from cinepregen_addon.core.camera_pose import CameraPose
    from cinepregen_addon.core.framing import frame_subject

    size = 0.6
    framed = frame_subject((0.0, 0.0, 0.75 * size), size, "CU", "LOW", 18.0, heading_deg=20.0)
    pose = CameraPose((*framed.location[:2], max(framed.location[2], MIN_CAMERA_HEIGHT_M)), framed.rotation_euler,
                      framed.lens_mm)
    middle = (0.0, 0.0, size / 2)
    distance = float(np.linalg.norm(np.subtract(middle, pose.location)))
    move = {"kind": "dolly_zoom", "params": {"distance": 0.6 * distance, "target": list(middle)}}
    with pytest.raises(ValueError, match="would reach the subject"):
        sample_move(MoveSpec.from_dict(move), pose, 1, 4)
    _stop_short_of(move, pose, middle)
    assert len(sample_move(MoveSpec.from_dict(move), pose, 1, 4)) == 4
