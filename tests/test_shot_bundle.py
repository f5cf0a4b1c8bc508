"""The shot-bundle format: exact round trips, and every way a bad bundle is rejected with a useful message."""

import json
import shutil
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from backend.cli import main
from cinepregen_addon.core import bundle_checks, bundle_zip
from cinepregen_addon.core import camera_geometry as geometry
from cinepregen_addon.core import shot_bundle as sb

W, H, FRAMES = 16, 12, 3


def make_bundle(seed: int = 0) -> sb.ShotBundle:
    """A small but complete bundle: a camera truck over two objects, clay, one reference image."""
    rng = np.random.default_rng(seed)
    K = geometry.intrinsics_from_blender(35.0, 36.0, 24.0, "AUTO", W, H)
    cameras, passes = [], []
    for i in range(FRAMES):
        matrix_world = np.eye(4)
        matrix_world[:3, 3] = [0.1 * i, -5.0, 1.0]
        cameras.append(sb.FrameCamera(frame=10 + i, K=K,
                                      world_to_camera=geometry.world_to_camera_from_matrix_world(matrix_world)))
        depth = rng.uniform(1.0, 20.0, (H, W)).astype(np.float32)
        object_id = rng.choice(np.array([0, 3, 7], np.int32), (H, W))
        depth[object_id == 0] = 0.0
        normal = rng.normal(size=(H, W, 3))
        normal = (normal / np.linalg.norm(normal, axis=-1, keepdims=True)).astype(np.float32)
        normal[object_id == 0] = 0.0
        passes.append(sb.FramePasses(depth=depth, normal=normal, object_id=object_id,
                                     vector=rng.normal(size=(H, W, 4)).astype(np.float32),
                                     clay=rng.integers(0, 256, (H, W, 3), dtype=np.uint8)))
    return sb.ShotBundle(
        name="shot_010", fps=24.0, width=W, height=H, frame_start=10, frame_end=10 + FRAMES - 1, cameras=cameras,
        passes=passes, objects=[sb.BundleObject(3, "Hero.001"), sb.BundleObject(7, "Tree")],
        prompt="a knight in a misty forest", seed=42, style={"look": "noir"}, shot={"shot_size": "MS"},
        reference_images={3: rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)},
    )


@pytest.fixture
def folder(tmp_path) -> Path:
    return sb.write_bundle(make_bundle(), tmp_path / "bundle")


def assert_same(a: sb.ShotBundle, b: sb.ShotBundle) -> None:
    for key in ("name", "fps", "width", "height", "frame_start", "frame_end", "prompt", "seed", "style", "shot"):
        assert getattr(a, key) == getattr(b, key), key
    assert [(o.id, o.name) for o in a.objects] == [(o.id, o.name) for o in b.objects]
    for ca, cb in zip(a.cameras, b.cameras, strict=True):
        assert ca.frame == cb.frame
        np.testing.assert_array_equal(ca.K, cb.K)
        np.testing.assert_array_equal(ca.world_to_camera, cb.world_to_camera)
    for pa, pb in zip(a.passes, b.passes, strict=True):
        assert pa.arrays().keys() == pb.arrays().keys()
        for key, array in pa.arrays().items():
            assert array.dtype == pb.arrays()[key].dtype
            np.testing.assert_array_equal(array, pb.arrays()[key])
    assert a.reference_images.keys() == b.reference_images.keys()
    for key, image in a.reference_images.items():
        np.testing.assert_array_equal(image, b.reference_images[key])


def test_write_read_round_trip_is_exact(folder):
    original = make_bundle()
    loaded = sb.read_bundle(folder)
    assert_same(original, loaded)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == ["frames/000000.npz", "frames/000001.npz", "frames/000002.npz", "references/3-Hero_001.png",
                     "shot.json"]
    assert loaded.objects[0].reference == "references/3-Hero_001.png" and loaded.objects[1].reference is None
    doc = json.loads((folder / "shot.json").read_text())
    assert doc["schema_version"] == sb.SCHEMA_VERSION and doc["resolution"] == [W, H]
    assert [f["frame"] for f in doc["frames"]] == [10, 11, 12]
    assert sb.validate_bundle(folder) == []


def test_frames_are_compressed(folder):
    with zipfile.ZipFile(folder / "frames/000000.npz") as npz:
        assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in npz.infolist())


def test_zip_round_trip(folder, tmp_path):
    archive = sb.zip_bundle(folder, tmp_path / "shot.zip")
    assert sb.validate_bundle(archive) == []
    assert_same(make_bundle(), sb.read_bundle(archive))
    extracted = bundle_zip.extract_bundle_zip(archive, tmp_path / "unpacked")
    assert extracted == tmp_path / "unpacked"
    assert_same(make_bundle(), sb.read_bundle(extracted))


def test_zip_with_a_single_top_folder_is_accepted(folder, tmp_path):
    archive = tmp_path / "nested.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in folder.rglob("*"):
            if file.is_file():
                zf.write(file, "shot_010/" + file.relative_to(folder).as_posix())
    assert bundle_zip.extract_bundle_zip(archive, tmp_path / "out") == tmp_path / "out" / "shot_010"
    assert_same(make_bundle(), sb.read_bundle(archive))


def test_write_refuses_to_overwrite_unless_asked(folder, tmp_path):
    with pytest.raises(FileExistsError, match="overwrite=True"):
        sb.write_bundle(make_bundle(seed=1), folder)
    sb.write_bundle(make_bundle(seed=1), folder, overwrite=True)
    assert_same(make_bundle(seed=1), sb.read_bundle(folder))
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="not a shot bundle"):
        sb.write_bundle(make_bundle(), other, overwrite=True)
    assert (other / "holiday.jpg").read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "photos"]   # no staging leftovers


def test_write_rejects_an_invalid_bundle_in_memory(tmp_path):
    bundle = make_bundle()
    bundle.passes[1].object_id = bundle.passes[1].object_id.astype(np.float32)
    bundle.cameras = bundle.cameras[:2]
    with pytest.raises(sb.BundleError) as error:
        sb.write_bundle(bundle, tmp_path / "bad")
    assert any(p.startswith("frames[1].object_id: dtype float32") for p in error.value.problems)
    assert any("2 cameras" in p for p in error.value.problems)
    assert not (tmp_path / "bad").exists()


def test_write_refuses_more_objects_than_a_reader_accepts(tmp_path):
    """A shot showing 1,100 objects was written and called done, then refused when read back to be sent."""
    bundle = make_bundle()
    bundle.objects = [sb.BundleObject(id=i, name=f"Prop {i}") for i in range(1, 1101)]
    with pytest.raises(sb.BundleError, match="1100 objects, more than the 1024"):
        sb.write_bundle(bundle, tmp_path / "crowd")
    assert not (tmp_path / "crowd").exists()


def test_summary(folder):
    summary = sb.bundle_summary(sb.read_bundle(folder))
    assert summary["frames"] == 3 and summary["resolution"] == [W, H]
    assert summary["objects"] == ["Hero.001", "Tree"] and summary["references"] == ["Hero.001"]


# --- rejections: each breaks one thing on disk and expects the field and frame in the message -------------------

def edit_json(folder: Path, change) -> None:
    doc = json.loads((folder / "shot.json").read_text())
    change(doc)
    (folder / "shot.json").write_text(json.dumps(doc))


def edit_frame(folder: Path, index: int, change) -> None:
    path = folder / sb.frame_file(index)
    with np.load(path) as npz:
        arrays = {key: npz[key] for key in npz.files}
    change(arrays)
    np.savez_compressed(path, **arrays)


def set_camera(index: int, key: str, value):
    return lambda doc: doc["frames"][index].__setitem__(key, value)


def mutate_array(key: str, change):
    def apply(arrays):
        arrays[key] = change(arrays[key])
    return apply


def with_value(value, where=(0, 0)):
    def change(array):
        array = array.copy()
        array[where] = value
        return array
    return change


SCALED = (np.diag([2.0, 1.0, 1.0, 1.0]) @ np.eye(4)).tolist()
MIRRORED = np.diag([-1.0, 1.0, 1.0, 1.0]).tolist()
SHEARED_ROW = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0.5, 1]]
LOWER_K = [[30.0, 0, 8], [1.0, 30.0, 6], [0, 0, 1]]
NEGATIVE_F = [[-30.0, 0, 8], [0, 30.0, 6], [0, 0, 1]]


def first_object_pixel(folder: Path, index: int, object_id: int):
    with np.load(folder / sb.frame_file(index)) as npz:
        return tuple(np.argwhere(npz["object_id"] == object_id)[0])


REJECTIONS = {
    "missing frame file": (lambda f: (f / "frames/000001.npz").unlink(), ["frames[1].file", "missing"]),
    "extra frame file": (lambda f: shutil.copy(f / "frames/000000.npz", f / "frames/000003.npz"),
                         ["frames/000003.npz", "extra"]),
    "frame count vs range": (lambda f: edit_json(f, lambda d: d.__setitem__("frame_end", 13)),
                             ["frames: 3 entries", "10..13", "4 frames"]),
    "frames list too short": (lambda f: edit_json(f, lambda d: d["frames"].pop()), ["frames: 2 entries",
                                                                                     "10..12"]),
    "wrong frame number": (lambda f: edit_json(f, set_camera(2, "frame", 99)), ["frames[2].frame", "expected 12"]),
    "wrong depth shape": (lambda f: edit_frame(f, 2, mutate_array("depth", lambda a: a[:, :-1])),
                          ["frames[2].depth", "shape (12, 15)", "(12, 16)"]),
    "wrong normal shape": (lambda f: edit_frame(f, 1, mutate_array("normal", lambda a: a[..., :2])),
                           ["frames[1].normal", "shape"]),
    "wrong vector dtype": (lambda f: edit_frame(f, 0, mutate_array("vector", lambda a: a.astype(np.float64))),
                           ["frames[0].vector", "dtype float64"]),
    "missing pass": (lambda f: edit_frame(f, 1, lambda a: a.pop("normal")), ["frames[1].normal", "missing"]),
    "unknown pass": (lambda f: edit_frame(f, 1, lambda a: a.__setitem__("albedo", a["depth"])),
                     ["frames[1].albedo", "unexpected", "refused before loading"]),
    "NaN depth": (lambda f: edit_frame(f, 1, mutate_array("depth", with_value(np.nan))),
                  ["frames[1].depth", "NaN"]),
    "infinite depth": (lambda f: edit_frame(f, 2, mutate_array("depth", with_value(np.inf))),
                       ["frames[2].depth", "infinite"]),
    "negative depth": (lambda f: edit_frame(f, 1, mutate_array("depth", with_value(-1.0))),
                       ["frames[1].depth", "negative"]),
    "float object IDs": (lambda f: edit_frame(f, 0, mutate_array("object_id", lambda a: a.astype(np.float32))),
                         ["frames[0].object_id", "float32", "integers"]),
    "int64 object IDs": (lambda f: edit_frame(f, 0, mutate_array("object_id", lambda a: a.astype(np.int64))),
                         ["frames[0].object_id", "int64", "int32"]),
    "ID without object": (lambda f: edit_frame(f, 2, mutate_array(
        "object_id", with_value(9, first_object_pixel(f, 2, 7)))), ["frames[2].object_id", "IDs [9]", "objects"]),
    "ID on background": (lambda f: edit_frame(f, 1, mutate_array(
        "object_id", with_value(3, first_object_pixel(f, 1, 0)))), ["frames[1].object_id", "background"]),
    "non-finite K": (lambda f: edit_json(f, set_camera(1, "K", [[float("nan"), 0, 8], [0, 30, 6], [0, 0, 1]])),
                     ["frames[1].K", "non-finite"]),
    "lower-triangular K": (lambda f: edit_json(f, set_camera(2, "K", LOWER_K)), ["frames[2].K", "upper-triangular"]),
    "negative focal": (lambda f: edit_json(f, set_camera(0, "K", NEGATIVE_F)), ["frames[0].K", "focal"]),
    "ragged K": (lambda f: edit_json(f, set_camera(0, "K", [[1, 2], [3]])), ["frames[0].K", "3x3"]),
    "scaled extrinsics": (lambda f: edit_json(f, set_camera(2, "world_to_camera", SCALED)),
                          ["frames[2].world_to_camera", "orthonormal"]),
    "mirrored extrinsics": (lambda f: edit_json(f, set_camera(1, "world_to_camera", MIRRORED)),
                            ["frames[1].world_to_camera", "determinant"]),
    "bad bottom row": (lambda f: edit_json(f, set_camera(0, "world_to_camera", SHEARED_ROW)),
                       ["frames[0].world_to_camera", "bottom row"]),
    "infinite extrinsics": (lambda f: edit_json(f, set_camera(1, "world_to_camera", [[float("inf")] * 4] * 4)),
                            ["frames[1].world_to_camera", "non-finite"]),
    "unknown schema": (lambda f: edit_json(f, lambda d: d.__setitem__("schema_version", 2)),
                       ["schema_version", "unsupported version 2"]),
    "missing schema": (lambda f: edit_json(f, lambda d: d.pop("schema_version")), ["schema_version", "None"]),
    "missing reference": (lambda f: (f / "references/3-Hero_001.png").unlink(),
                          ["objects[0].reference", "references/3-Hero_001.png is missing"]),
    "corrupt reference": (lambda f: (f / "references/3-Hero_001.png").write_bytes(b"GIF89a"),
                          ["objects[0].reference", "not a readable PNG"]),
    "traversal in frame file": (lambda f: edit_json(f, set_camera(1, "file", "../frames/000001.npz")),
                                ["frames[1].file", "unsafe path"]),
    "absolute frame file": (lambda f: edit_json(f, set_camera(0, "file", str(f.resolve() / sb.frame_file(0)))),
                            ["frames[0].file", "unsafe path"]),
    "traversal in reference": (lambda f: edit_json(f, lambda d: d["objects"][1].__setitem__(
        "reference", "../../secret.png")), ["objects[1].reference", "unsafe path"]),
    "duplicate object ID": (lambda f: edit_json(f, lambda d: d["objects"][1].__setitem__("id", 3)),
                            ["objects[1].id", "duplicate"]),
    "bad resolution": (lambda f: edit_json(f, lambda d: d.__setitem__("resolution", [16.5, 12])), ["resolution"]),
    "file is not a string": (lambda f: edit_json(f, set_camera(1, "file", ["frames/000001.npz"])),
                             ["frames[1].file", "unsafe path"]),
    "no shot.json": (lambda f: (f / "shot.json").unlink(), ["shot.json: missing"]),
    "not JSON": (lambda f: (f / "shot.json").write_text("{"), ["shot.json", "not valid JSON"]),
    "lone surrogate in the name": (lambda f: edit_json(f, lambda d: d.__setitem__("name", "shot\ud800")),
                                   ["name", "lone surrogate"]),
    "lone surrogate in the prompt": (lambda f: edit_json(f, lambda d: d.__setitem__("prompt", "a \udcff b")),
                                     ["prompt", "lone surrogate"]),
    "lone surrogate in an object name": (lambda f: edit_json(f, lambda d: d["objects"][0].__setitem__(
        "name", "\udfff")), ["objects[0].name", "lone surrogate"]),
    "lone surrogate in style": (lambda f: edit_json(f, lambda d: d.__setitem__("style", {"look": "\ud800"})),
                                ["style", "not Unicode"]),
    "NUL in the name": (lambda f: edit_json(f, lambda d: d.__setitem__("name", "shot\x00one")),
                        ["name", "control characters"]),
    "prompt too long": (lambda f: edit_json(f, lambda d: d.__setitem__("prompt", "x" * 4001)),
                        ["prompt", "0 to 4000 characters"]),
    "shot object too large": (lambda f: edit_json(f, lambda d: d.__setitem__("shot", {"note": "x" * 70_000})),
                              ["shot", "bytes as JSON"]),
    "fps below one": (lambda f: edit_json(f, lambda d: d.__setitem__("fps", 1e-7)), ["fps", "from 1 to 1000"]),
    "reference no object names": (lambda f: shutil.copy(f / "references/3-Hero_001.png", f / "references/junk.png"),
                                  ["references/junk.png", "extra file", "not the reference of any object"]),
    "frame file with many arrays": (lambda f: edit_frame(f, 1, lambda a: a.update(
        {f"pad{i}": np.zeros(1) for i in range(20)})), ["frames[1].file", "too many arrays", "at most 16"]),
    "oversized npz member": (lambda f: edit_frame(f, 1, lambda a: a.__setitem__("normal", np.zeros(
        (H, W, 3, 8), np.float32))), ["frames[1].normal", f"shape (12, 16, 3, 8), expected ({H}, {W}, 3)"]),
}


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_bad_bundles_are_rejected_with_field_and_frame(folder, case):
    breaker, expected = REJECTIONS[case]
    breaker(folder)
    problems = sb.validate_bundle(folder)
    assert problems, f"{case} was not detected"
    assert any(all(part in problem for part in expected) for problem in problems), problems
    with pytest.raises(sb.BundleError) as error:
        sb.read_bundle(folder)
    assert error.value.problems == problems and isinstance(error.value, ValueError)


def test_a_prompt_may_hold_line_breaks_and_any_script(folder):
    edit_json(folder, lambda d: d.update(prompt="Wide shot.\n\tA knight — 騎士 — walks on 🐴",
                                         name="Szene 1 — Ankunft"))
    bundle = sb.read_bundle(folder)
    assert bundle.prompt.startswith("Wide shot.\n\t") and bundle.name == "Szene 1 — Ankunft"


def test_a_blender_name_with_control_characters_becomes_a_label_a_bundle_can_carry():
    assert bundle_checks.printable_name("Armature\tBone\x00.001") == "Armature Bone .001"
    assert bundle_checks.printable_name("\x07\x07") == "unnamed"
    assert len(bundle_checks.printable_name("x" * 500)) == bundle_checks.MAX_NAME_LENGTH


def test_every_problem_is_reported_at_once(folder):
    REJECTIONS["negative depth"][0](folder)
    REJECTIONS["scaled extrinsics"][0](folder)
    problems = sb.validate_bundle(folder)
    assert len(problems) == 2 and problems[0].startswith("frames[1].depth")
    assert problems[1].startswith("frames[2].world_to_camera")


def test_symlinked_frame_file_is_rejected(folder, tmp_path):
    outside = tmp_path / "elsewhere.npz"
    (folder / "frames/000002.npz").rename(outside)
    (folder / "frames/000002.npz").symlink_to(outside)
    assert any(p.startswith("frames[2].file") for p in sb.validate_bundle(folder))


def test_missing_path(tmp_path):
    assert sb.validate_bundle(tmp_path / "nope") == [f"{tmp_path / 'nope'}: no such file or folder"]


# --- zips -----------------------------------------------------------------------------------------------------------

def evil_zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return path


def symlink_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize("entry, expected", [
    ("../evil.txt", "unsafe path"),
    ("frames/../../evil.txt", "unsafe path"),
    ("/etc/evil.txt", "unsafe path"),
    ("C:/evil.txt", "unsafe path"),
    (symlink_entry("frames/000000.npz"), "symlinks"),
])
def test_unsafe_zip_entries_are_rejected_before_unpacking(tmp_path, entry, expected):
    archive = evil_zip(tmp_path / "evil.zip", [("shot.json", b"{}"), (entry, b"/etc/passwd")])
    with pytest.raises(sb.BundleError, match=expected):
        bundle_zip.extract_bundle_zip(archive, tmp_path / "dest")
    assert not (tmp_path / "dest").exists() and not (tmp_path / "evil.txt").exists()
    assert any(expected in p for p in sb.validate_bundle(archive))


def test_zip_bombs_are_rejected(folder, tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("shot.json", b"\0" * 5_000_000)   # 5 MB of zeros pack to a few kB
    assert bomb.stat().st_size < 50_000
    with pytest.raises(sb.BundleError, match="more than the limit of 1000000"):
        bundle_zip.extract_bundle_zip(bomb, tmp_path / "dest", max_total_bytes=1_000_000)
    monkeypatch.setattr(bundle_zip, "MAX_ZIP_ENTRIES", 4)
    archive = sb.zip_bundle(folder, tmp_path / "shot.zip")   # 5 files
    with pytest.raises(sb.BundleError, match="5 entries, more than the limit of 4"):
        bundle_zip.extract_bundle_zip(archive, tmp_path / "dest2")


def test_a_zip_of_many_entries_is_refused_from_its_end_record_before_it_is_parsed(tmp_path, monkeypatch):
    archive = evil_zip(tmp_path / "many.zip", [(f"frames/{i:06d}.npz", b"") for i in range(300)])
    assert bundle_zip.zip_entry_count(archive) == 300
    with zipfile.ZipFile(archive, "a") as zf:
        zf.comment = b"a comment after the end record's fields"
    assert bundle_zip.zip_entry_count(archive) == 300
    assert bundle_zip.zip_entry_count(tmp_path / "many.zip") == 300
    with zipfile.ZipFile(tmp_path / "zip64.zip", "w") as zf:  # over 65,535 entries: a ZIP64 end record
        for i in range(65_600):
            zf.writestr(f"e{i}", b"")
    assert bundle_zip.zip_entry_count(tmp_path / "zip64.zip") == 65_600
    (tmp_path / "not.zip").write_bytes(b"PK\x03\x04 and nothing else")
    assert bundle_zip.zip_entry_count(tmp_path / "not.zip") is None
    monkeypatch.setattr(bundle_zip, "MAX_ZIP_ENTRIES", 100)
    monkeypatch.setattr(zipfile.ZipFile, "infolist", lambda self: pytest.fail("the central directory was parsed"))
    with pytest.raises(sb.BundleError, match="300 entries, more than the limit of 100"):
        bundle_zip.extract_bundle_zip(archive, tmp_path / "dest")


def test_a_folder_entry_named_like_a_reference_is_refused(tmp_path):
    archive = evil_zip(tmp_path / "dir.zip", [("shot.json", b"{}"), ("references/evil.png/", b"")])
    with pytest.raises(sb.BundleError, match="a folder where a shot bundle has a file"):
        bundle_zip.extract_bundle_zip(archive, tmp_path / "dest")


def test_zip_lying_about_sizes_is_stopped_while_unpacking(tmp_path):
    archive = tmp_path / "liar.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("shot.json", b"x" * 3000)
    data = bytearray(archive.read_bytes())
    # Patch the declared uncompressed size in the central directory to 10 bytes.
    central = data.rfind(b"PK\x01\x02")
    data[central + 24:central + 28] = struct.pack("<I", 10)
    archive.write_bytes(bytes(data))
    with pytest.raises(sb.BundleError, match="zip: corrupt entry"):
        bundle_zip.extract_bundle_zip(archive, tmp_path / "dest", max_total_bytes=1000)
    assert not (tmp_path / "dest").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(sb.BundleError, match="zip: corrupt entry"):
        bundle_zip.extract_bundle_zip(archive, tmp_path / "empty", max_total_bytes=1000)
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())
    assert any(p.startswith("zip: corrupt entry") for p in sb.validate_bundle(archive))


def test_extract_refuses_a_non_empty_destination(folder, tmp_path):
    archive = sb.zip_bundle(folder, tmp_path / "shot.zip")
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        bundle_zip.extract_bundle_zip(archive, tmp_path / "dest")


# --- CLI --------------------------------------------------------------------------------------------------------------

def test_cli_bundle_validate_exit_codes(folder, tmp_path, capsys):
    assert main(["bundle", "validate", str(folder)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "ok"
    archive = sb.zip_bundle(folder, tmp_path / "shot.zip")
    assert main(["bundle", "validate", str(archive)]) == 0
    capsys.readouterr()
    REJECTIONS["negative depth"][0](folder)
    assert main(["bundle", "validate", str(folder)]) == 1
    assert capsys.readouterr().out.startswith("frames[1].depth: 1 pixels have negative depth")
    assert main(["bundle", "validate", str(tmp_path / "missing")]) == 2
    assert "no such file" in capsys.readouterr().out
