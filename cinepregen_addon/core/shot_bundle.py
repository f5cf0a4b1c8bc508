"""The shot bundle: the one on-disk format that carries a shot's cameras and guidance passes from Blender to the
backend (docs/shot-bundle.md).

A bundle is a folder (or the same files in a zip) holding ``shot.json``, one compressed ``frames/NNNNNN.npz`` per
frame and ``references/*.png``. Everything read from disk is validated on the way in, by the rules of
``bundle_checks`` (zips are unpacked by ``bundle_zip`` first), so the backend never trusts a bundle it did not check.
Stdlib + numpy only: this module also runs inside Blender's Python.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .bundle_checks import (
    MAX_ARRAYS_PER_FRAME,
    MAX_SHOT_JSON_BYTES,
    SUPPORTED_SCHEMA_VERSIONS,
    BundleError,
    check_bundle,
    check_camera,
    check_header,
    check_objects,
    check_passes,
    is_safe_relative_path,
    npy_member_problem,
)
from .bundle_zip import ZIP64_ENTRIES, extract_bundle_zip, zip_entry_count
from .png_codec import read_png, write_png

SCHEMA_VERSION = 1
ImageReader = Callable[[Path], np.ndarray]  # a reference image file -> (H, W, 3) uint8 (default: read_png)


@dataclass
class FrameCamera:
    frame: int
    K: np.ndarray
    world_to_camera: np.ndarray


@dataclass
class FramePasses:
    depth: np.ndarray
    normal: np.ndarray
    object_id: np.ndarray
    vector: np.ndarray
    clay: np.ndarray | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        names = ("depth", "normal", "object_id", "vector", "clay")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


@dataclass
class BundleObject:
    id: int
    name: str
    reference: str | None = None


@dataclass
class ShotBundle:
    name: str
    fps: float
    width: int
    height: int
    frame_start: int
    frame_end: int
    cameras: list[FrameCamera]
    passes: list[FramePasses]
    objects: list[BundleObject]
    prompt: str = ""
    seed: int = 0
    style: dict = field(default_factory=dict)
    shot: dict = field(default_factory=dict)
    reference_images: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return self.frame_end - self.frame_start + 1


def frame_file(index: int) -> str:
    return f"frames/{index:06d}.npz"


def reference_file(object_id: int, name: str) -> str:
    """A file name safe on every OS, unique per object even when names differ only in punctuation."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:64] or "object"
    return f"references/{object_id}-{slug}.png"


# --- writing ------------------------------------------------------------------------------------------------------

def write_bundle(bundle: ShotBundle, folder: str | Path, overwrite: bool = False) -> Path:
    """Validate ``bundle`` and write it to ``folder``.

    The files are written into a sibling temporary folder that is renamed into place, so a crash never leaves a
    half-written bundle behind. An existing non-empty folder is only replaced with ``overwrite=True``, and only if
    it is itself a shot bundle (it has ``shot.json``), so a typo can never wipe an unrelated folder.
    """
    problems = check_bundle(bundle)
    if problems:
        raise BundleError(problems)
    folder = Path(folder)
    existing = folder.exists() and any(folder.iterdir())
    if existing and not overwrite:
        raise FileExistsError(f"{folder} is not empty; pass overwrite=True to replace the shot bundle there")
    if existing and not (folder / "shot.json").is_file():
        raise FileExistsError(f"{folder} is not empty and is not a shot bundle; refusing to replace it")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        _write_files(bundle, staging)
        if folder.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
            os.replace(folder, trash / "bundle")
            os.replace(staging, folder)
            shutil.rmtree(trash)
        else:
            os.replace(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return folder


def _write_files(bundle: ShotBundle, root: Path) -> None:
    (root / "frames").mkdir()
    objects = []
    for obj in bundle.objects:
        reference = None
        if obj.id in bundle.reference_images:
            reference = reference_file(obj.id, obj.name)
            (root / "references").mkdir(exist_ok=True)
            write_png(root / reference, bundle.reference_images[obj.id])
        objects.append({"id": obj.id, "name": obj.name, "reference": reference})
    frames = []
    for i, (camera, passes) in enumerate(zip(bundle.cameras, bundle.passes, strict=True)):
        np.savez_compressed(root / frame_file(i), **passes.arrays())
        frames.append({"index": i, "frame": camera.frame, "file": frame_file(i),
                       "K": np.asarray(camera.K, dtype=np.float64).tolist(),
                       "world_to_camera": np.asarray(camera.world_to_camera, dtype=np.float64).tolist()})
    doc = {"schema_version": SCHEMA_VERSION, "name": bundle.name, "fps": bundle.fps,
           "resolution": [bundle.width, bundle.height], "frame_start": bundle.frame_start,
           "frame_end": bundle.frame_end, "prompt": bundle.prompt, "seed": bundle.seed, "style": bundle.style,
           "shot": bundle.shot, "frames": frames, "objects": objects}
    text = json.dumps(doc, indent=1, allow_nan=False, default=_json_value)
    (root / "shot.json").write_text(text + "\n", encoding="utf-8")


def _json_value(value: object) -> object:
    """numpy scalars and arrays in ``style``/``shot`` metadata, as plain JSON values."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# --- reading ------------------------------------------------------------------------------------------------------

def read_bundle(path: str | Path, read_image: ImageReader | None = None) -> ShotBundle:
    """Load and validate a bundle folder or zip; raises ``BundleError`` listing every problem. ``read_image``
    decodes reference images (the server passes a C-backed decoder; Blender's side keeps the stdlib reader)."""
    bundle, problems = _load(Path(path), read_image)
    if problems:
        raise BundleError(problems)
    return bundle


def validate_bundle(path: str | Path) -> list[str]:
    """Every problem of the bundle at ``path`` (folder or zip); an empty list means it is ok."""
    return _load(Path(path))[1]


def _load(path: Path, read_image: ImageReader | None = None) -> tuple[ShotBundle | None, list[str]]:
    if path.is_dir():
        return _load_folder(path, read_image)
    if not path.exists():
        return None, [f"{path}: no such file or folder"]
    if not zipfile.is_zipfile(path):
        return None, [f"{path}: not a shot bundle folder or zip"]
    with tempfile.TemporaryDirectory(prefix="cinepregen-bundle-") as tmp:
        try:
            folder = extract_bundle_zip(path, Path(tmp) / "bundle")
        except BundleError as error:
            return None, error.problems
        return _load_folder(folder, read_image)


def _load_folder(root: Path, read_image: ImageReader | None = None) -> tuple[ShotBundle | None, list[str]]:
    read_image = read_image or read_png
    try:
        size = (root / "shot.json").stat().st_size
        if size > MAX_SHOT_JSON_BYTES:
            return None, [f"shot.json: {size:,} bytes, more than the {MAX_SHOT_JSON_BYTES:,} a shot bundle may hold"]
        doc = json.loads((root / "shot.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, ["shot.json: missing"]
    except OSError as error:
        return None, [f"shot.json: cannot be read ({error})"]
    except (UnicodeDecodeError, ValueError) as error:  # ValueError: bad JSON, or an integer of over 4,300 digits
        return None, [f"shot.json: not valid JSON ({str(error)[:200]})"]
    except RecursionError:
        return None, ["shot.json: nested too deeply to be a shot bundle"]
    if not isinstance(doc, dict):
        return None, ["shot.json: must hold a JSON object"]
    version = doc.get("schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS or isinstance(version, bool):
        return None, [f"schema_version: unsupported version {version!r} (this reader knows "
                      f"{', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))})"]
    resolution = doc.get("resolution")
    if not (isinstance(resolution, list) and len(resolution) == 2):
        return None, [f"resolution: must be [width, height], got {resolution!r}"]
    bundle = ShotBundle(
        name=doc.get("name"), fps=doc.get("fps"), width=resolution[0], height=resolution[1],
        frame_start=doc.get("frame_start"), frame_end=doc.get("frame_end"), cameras=[], passes=[], objects=[],
        prompt=doc.get("prompt", ""), seed=doc.get("seed", 0), style=doc.get("style", {}), shot=doc.get("shot", {}),
    )
    problems = check_header(bundle)
    if problems:
        return None, problems
    objects, problems = _read_objects(root, doc.get("objects"), bundle, read_image)
    frames = doc.get("frames")
    if not isinstance(frames, list):
        return None, problems + ["frames: must be a list"]
    if len(frames) != bundle.num_frames:
        problems.append(f"frames: {len(frames)} entries but frame_start..frame_end "
                        f"({bundle.frame_start}..{bundle.frame_end}) has {bundle.num_frames} frames")
    ids = {obj.id for obj in objects}
    listed = set()
    for i, entry in enumerate(frames):
        if not isinstance(entry, dict):
            problems.append(f"frames[{i}]: must be an object")
            continue
        if entry.get("index") != i:
            problems.append(f"frames[{i}].index: expected {i}, got {entry.get('index')!r}")
        if entry.get("frame") != bundle.frame_start + i:
            problems.append(f"frames[{i}].frame: expected {bundle.frame_start + i}, got {entry.get('frame')!r}")
        camera_problems = check_camera(i, entry.get("K"), entry.get("world_to_camera"))
        problems += camera_problems
        arrays, file_problems = _read_frame_file(root, i, entry.get("file"), bundle.width, bundle.height)
        problems += file_problems
        if isinstance(entry.get("file"), str):
            listed.add(entry["file"])
        if arrays is not None:
            pass_problems = check_passes(i, arrays, bundle.width, bundle.height, ids)
            problems += pass_problems
            if not (camera_problems or pass_problems):
                bundle.cameras.append(FrameCamera(frame=entry["frame"], K=np.asarray(entry["K"], dtype=np.float64),
                                                  world_to_camera=np.asarray(entry["world_to_camera"],
                                                                             dtype=np.float64)))
                bundle.passes.append(FramePasses(**arrays))
    problems += _extra_files(root, "frames", listed, "listed in shot.json frames")
    references = {obj.reference for obj in objects if isinstance(obj.reference, str)}
    problems += _extra_files(root, "references", references, "the reference of any object in shot.json")
    return (None, problems) if problems else (bundle, [])


def _extra_files(root: Path, folder: str, expected: set[str], what: str) -> list[str]:
    """Entries of ``root/folder`` that shot.json does not name: refused, so a bundle carries (and a server stores
    and copies) only what it uses."""
    if not (root / folder).is_dir():
        return []
    extra = sorted(p.name for p in (root / folder).iterdir() if f"{folder}/{p.name}" not in expected)
    shown = [f"{folder}/{name[:80]}: extra file, not {what}" for name in extra[:10]]
    return shown + ([f"{folder}/: and {len(extra) - 10} more extra files"] if len(extra) > 10 else [])


def _read_objects(root: Path, entries: object, bundle: ShotBundle, read_image: ImageReader
                  ) -> tuple[list[BundleObject], list[str]]:
    if not isinstance(entries, list):
        return [], ["objects: must be a list"]
    objects, problems = [], []
    for j, entry in enumerate(entries):
        if not isinstance(entry, dict):
            problems.append(f"objects[{j}]: must be an object")
            continue
        objects.append(BundleObject(id=entry.get("id"), name=entry.get("name"), reference=entry.get("reference")))
    problems += check_objects(objects)
    for j, obj in enumerate(objects):
        if obj.reference is None or not is_safe_relative_path(obj.reference):
            continue
        file = root / obj.reference
        if file.is_symlink() or not file.is_file():
            problems.append(f"objects[{j}].reference: {obj.reference} is missing")
            continue
        try:
            bundle.reference_images[obj.id] = read_image(file)
        except ValueError as error:
            problems.append(f"objects[{j}].reference: {obj.reference} is not a readable PNG ({error})")
    bundle.objects = objects
    return objects, problems


def _read_frame_file(root: Path, index: int, name: object, width: int, height: int
                     ) -> tuple[dict[str, np.ndarray] | None, list[str]]:
    where = f"frames[{index}].file"
    if not is_safe_relative_path(name):
        return None, [f"{where}: unsafe path {name!r} (must be relative, without '..')"]
    if name != frame_file(index):
        return None, [f"{where}: expected {frame_file(index)}, got {name!r}"]
    file = root / name
    if file.is_symlink() or not file.is_file():
        return None, [f"{where}: {name} is missing"]
    try:
        if (entries := zip_entry_count(file) or 0) > MAX_ARRAYS_PER_FRAME:  # not a zip: zipfile says so below
            count = "65,535 or more" if entries == ZIP64_ENTRIES else f"{entries:,}"
            return None, [f"{where}: {name} holds too many arrays ({count}); a frame file holds one array per "
                          f"pass, and at most {MAX_ARRAYS_PER_FRAME} are read"]
        with zipfile.ZipFile(file) as archive:
            problems = [(info.filename, npy_member_problem(archive, info, width, height))
                        for info in archive.infolist()]
            problems = [f"frames[{index}].{member.removesuffix('.npy')[:40]}: {problem}"
                        for member, problem in problems if problem]
            if problems:
                return None, problems
        with np.load(file, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}, []
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError) as error:
        return None, [f"{where}: {name} is not a readable npz ({str(error)[:200]})"]


def bundle_summary(bundle: ShotBundle) -> dict:
    """What the CLI and the server show about a bundle."""
    return {"name": bundle.name, "frames": bundle.num_frames, "frame_start": bundle.frame_start,
            "frame_end": bundle.frame_end, "fps": bundle.fps, "resolution": [bundle.width, bundle.height],
            "objects": [obj.name for obj in bundle.objects],
            "references": sorted(obj.name for obj in bundle.objects if obj.id in bundle.reference_images),
            "prompt": bundle.prompt, "seed": bundle.seed}


def zip_bundle(folder: str | Path, zip_path: str | Path) -> Path:
    """Pack a valid bundle folder into a zip with its files at the archive root."""
    folder, zip_path = Path(folder), Path(zip_path)
    problems = validate_bundle(folder)
    if problems:
        raise BundleError(problems)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    partial = zip_path.with_name(zip_path.name + ".partial")
    with zipfile.ZipFile(partial, "w") as archive:
        for file in files:
            name = file.relative_to(folder).as_posix()
            method = zipfile.ZIP_STORED if name.endswith((".npz", ".png")) else zipfile.ZIP_DEFLATED
            archive.write(file, name, compress_type=method)
    os.replace(partial, zip_path)
    return zip_path
