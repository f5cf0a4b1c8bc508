"""The shot bundle: the one on-disk format that carries a shot's cameras and guidance passes from Blender to the
backend (docs/shot-bundle.md).

A bundle is a folder (or the same files in a zip) holding ``shot.json``, one compressed ``frames/NNNNNN.npz`` per
frame and ``references/*.png``. Everything read from disk is validated here, in one place, so the backend never
trusts a bundle it did not check; messages name the field and the frame so a user can fix the scene.
Stdlib + numpy only: this module also runs inside Blender's Python.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from .png_codec import read_png, write_png

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (1,)
PASS_DTYPES = {"depth": np.float32, "normal": np.float32, "object_id": np.int32, "vector": np.float32,
               "clay": np.uint8}
PASS_CHANNELS = {"depth": None, "normal": 3, "object_id": None, "vector": 4, "clay": 3}
OPTIONAL_PASSES = ("clay",)
MAX_RESOLUTION = 16384
MAX_ZIP_ENTRIES = 20000
MAX_ZIP_BYTES = 8 * 1024**3
MAX_NAME_LENGTH = 200  # shot and object names
MAX_FPS = 1000.0
MAX_FRAME_NUMBER = 10**9  # |frame_start|, |frame_end| (Blender's own limit is 1,048,574)
MAX_SEED = 2**63 - 1
MAX_OBJECTS = 1024
ImageReader = Callable[[Path], np.ndarray]  # a reference image file -> (H, W, 3) uint8 (default: read_png)
BUNDLE_MEMBERS = re.compile(r"shot\.json|frames/?|frames/\d{6}\.npz|references/?|references/[^/]+\.png")
RIGID_TOLERANCE = 1e-4


class BundleError(ValueError):
    """A shot bundle that cannot be used; ``problems`` lists every reason found."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("invalid shot bundle:\n  " + "\n  ".join(self.problems))


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


def is_safe_relative_path(path: object) -> bool:
    """Whether ``path`` stays inside the bundle: relative, POSIX, no '..', no drive or backslash."""
    if not isinstance(path, str) or not path or "\\" in path or ":" in path or "\x00" in path:
        return False
    parts = PurePosixPath(path).parts
    return not path.startswith("/") and all(part not in ("", ".", "..") for part in parts)


# --- validation shared by reading and writing --------------------------------------------------------------------

def _check_camera(index: int, K: object, world_to_camera: object) -> list[str]:
    where = f"frames[{index}]"
    problems = []
    K = np.asarray(K, dtype=np.float64) if _numeric(K) else None
    if K is None or K.shape != (3, 3):
        problems.append(f"{where}.K: must be a 3x3 matrix of numbers")
    elif not np.all(np.isfinite(K)):
        problems.append(f"{where}.K: has non-finite entries")
    elif K[1, 0] != 0 or K[2, 0] != 0 or K[2, 1] != 0 or K[2, 2] != 1:
        problems.append(f"{where}.K: must be upper-triangular with K[2,2] = 1, got {K.tolist()}")
    elif K[0, 0] <= 0 or K[1, 1] <= 0:
        problems.append(f"{where}.K: focal lengths must be positive, got fx={K[0, 0]}, fy={K[1, 1]}")
    m = np.asarray(world_to_camera, dtype=np.float64) if _numeric(world_to_camera) else None
    if m is None or m.shape != (4, 4):
        problems.append(f"{where}.world_to_camera: must be a 4x4 matrix of numbers")
    elif not np.all(np.isfinite(m)):
        problems.append(f"{where}.world_to_camera: has non-finite entries")
    elif not np.array_equal(m[3], [0.0, 0.0, 0.0, 1.0]):
        problems.append(f"{where}.world_to_camera: bottom row must be [0, 0, 0, 1], got {m[3].tolist()}")
    else:
        rotation = m[:3, :3]
        error = np.abs(rotation @ rotation.T - np.eye(3)).max()
        if error > RIGID_TOLERANCE:
            problems.append(f"{where}.world_to_camera: rotation is not orthonormal (error {error:.2e}); "
                            "remove scale and shear from the camera")
        elif abs(np.linalg.det(rotation) - 1.0) > RIGID_TOLERANCE:
            problems.append(f"{where}.world_to_camera: rotation has determinant {np.linalg.det(rotation):.4f}, "
                            "not +1 (a mirrored camera)")
    return problems


def _numeric(value: object) -> bool:
    try:
        array = np.asarray(value)
    except ValueError:
        return False
    return array.dtype.kind in "iuf"


def _check_passes(index: int, arrays: dict[str, np.ndarray], width: int, height: int,
                  object_ids: set[int]) -> list[str]:
    where = f"frames[{index}]"
    missing = [name for name in PASS_DTYPES if name not in arrays and name not in OPTIONAL_PASSES]
    extra = sorted(set(arrays) - set(PASS_DTYPES))
    problems = [f"{where}.{name}: missing" for name in missing]
    problems += [f"{where}.{name}: unexpected array (known: {', '.join(PASS_DTYPES)})" for name in extra]
    good = {}
    for name, dtype in PASS_DTYPES.items():
        if name not in arrays:
            continue
        array = np.asarray(arrays[name])
        channels = PASS_CHANNELS[name]
        shape = (height, width) if channels is None else (height, width, channels)
        if array.shape != shape:
            problems.append(f"{where}.{name}: shape {array.shape}, expected {shape} for resolution "
                            f"{width}x{height}")
        elif array.dtype != dtype:
            hint = " (object IDs must be integers)" if name == "object_id" else ""
            problems.append(f"{where}.{name}: dtype {array.dtype}, expected {np.dtype(dtype).name}{hint}")
        elif array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            count = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            problems.append(f"{where}.{name}: {count} values are NaN or infinite")
        else:
            good[name] = array
    if "depth" in good and (negative := int(np.count_nonzero(good["depth"] < 0))):
        problems.append(f"{where}.depth: {negative} pixels have negative depth")
    if "object_id" in good:
        ids = good["object_id"]
        unknown = sorted(set(np.unique(ids).tolist()) - object_ids - {0})
        if unknown:
            problems.append(f"{where}.object_id: IDs {unknown[:10]} have no entry in objects")
        if "depth" in good and np.any((good["depth"] == 0) & (ids != 0)):
            problems.append(f"{where}.object_id: background pixels (depth 0) must have object ID 0")
    return problems


def _check_objects(objects: list[BundleObject]) -> list[str]:
    problems, ids = [], set()
    for j, obj in enumerate(objects):
        if isinstance(obj.id, bool) or not isinstance(obj.id, int) or not 0 < obj.id < 2**31:
            problems.append(f"objects[{j}].id: must be an integer in 1..2^31-1, got {_short(obj.id)}")
        elif obj.id in ids:
            problems.append(f"objects[{j}].id: duplicate ID {obj.id}")
        ids.add(obj.id)
        if not isinstance(obj.name, str) or not 0 < len(obj.name) <= MAX_NAME_LENGTH:
            problems.append(f"objects[{j}].name: must be a string of 1 to {MAX_NAME_LENGTH} characters")
        if obj.reference is not None and not is_safe_relative_path(obj.reference):
            problems.append(f"objects[{j}].reference: unsafe path {_short(obj.reference)}")
    return problems


def _check_header(bundle: ShotBundle) -> list[str]:
    problems = []
    if not isinstance(bundle.name, str) or not 0 < len(bundle.name) <= MAX_NAME_LENGTH:
        problems.append(f"name: must be a string of 1 to {MAX_NAME_LENGTH} characters")
    if isinstance(bundle.fps, bool) or not isinstance(bundle.fps, (int, float)) or not (
            math.isfinite(bundle.fps) and 0 < bundle.fps <= MAX_FPS):
        problems.append(f"fps: must be a number in (0, {MAX_FPS:g}], got {_short(bundle.fps)}")
    for key in ("width", "height"):
        value = getattr(bundle, key)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_RESOLUTION:
            problems.append(f"resolution: {key} must be an integer in 1..{MAX_RESOLUTION}, got {_short(value)}")
    for key, low, high in (("frame_start", -MAX_FRAME_NUMBER, MAX_FRAME_NUMBER),
                           ("frame_end", -MAX_FRAME_NUMBER, MAX_FRAME_NUMBER), ("seed", 0, MAX_SEED)):
        value = getattr(bundle, key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            problems.append(f"{key}: must be an integer in {low}..{high}, got {_short(value)}")
    if not problems and bundle.frame_end < bundle.frame_start:
        problems.append(f"frame_end: {bundle.frame_end} is before frame_start {bundle.frame_start}")
    if not isinstance(bundle.prompt, str):
        problems.append("prompt: must be a string")
    for key in ("style", "shot"):
        if not isinstance(getattr(bundle, key), dict):
            problems.append(f"{key}: must be an object")
    return problems


def _short(value: object, limit: int = 40) -> str:
    """A value for a message, cut short (a 10^30 seed or a 2 MB name must not fill the answer)."""
    huge = isinstance(value, int) and abs(value) >= 10**30
    text = f"an integer of {len(str(value))} digits" if huge else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def check_bundle(bundle: ShotBundle) -> list[str]:
    """Every problem of an in-memory bundle (empty = ok); the same rules that ``validate_bundle`` applies on disk."""
    problems = _check_header(bundle)
    if problems:
        return problems
    expected = bundle.num_frames
    if len(bundle.cameras) != expected:
        problems.append(f"frames: {len(bundle.cameras)} cameras but frame_start..frame_end "
                        f"({bundle.frame_start}..{bundle.frame_end}) has {expected} frames")
    if len(bundle.passes) != expected:
        problems.append(f"frames: {len(bundle.passes)} frame passes but frame_start..frame_end "
                        f"({bundle.frame_start}..{bundle.frame_end}) has {expected} frames")
    for i, camera in enumerate(bundle.cameras):
        if camera.frame != bundle.frame_start + i:
            problems.append(f"frames[{i}].frame: expected {bundle.frame_start + i}, got {camera.frame!r}")
        problems += _check_camera(i, camera.K, camera.world_to_camera)
    problems += _check_objects(bundle.objects)
    ids = {obj.id for obj in bundle.objects}
    for i, passes in enumerate(bundle.passes):
        problems += _check_passes(i, passes.arrays(), bundle.width, bundle.height, ids)
    for object_id, image in bundle.reference_images.items():
        if object_id not in ids:
            problems.append(f"reference_images[{object_id}]: no object with this ID")
        elif not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
                  and image.shape[2] == 3 and image.size > 0):
            problems.append(f"reference_images[{object_id}]: must be an (H, W, 3) uint8 RGB image")
    return problems


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
    problems = _check_header(bundle)
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
        camera_problems = _check_camera(i, entry.get("K"), entry.get("world_to_camera"))
        problems += camera_problems
        arrays, file_problems = _read_frame_file(root, i, entry.get("file"), bundle.width, bundle.height)
        problems += file_problems
        if isinstance(entry.get("file"), str):
            listed.add(entry["file"])
        if arrays is not None:
            pass_problems = _check_passes(i, arrays, bundle.width, bundle.height, ids)
            problems += pass_problems
            if not (camera_problems or pass_problems):
                bundle.cameras.append(FrameCamera(frame=entry["frame"], K=np.asarray(entry["K"], dtype=np.float64),
                                                  world_to_camera=np.asarray(entry["world_to_camera"],
                                                                             dtype=np.float64)))
                bundle.passes.append(FramePasses(**arrays))
    frames_dir = root / "frames"
    if frames_dir.is_dir():
        for extra in sorted(p.name for p in frames_dir.iterdir() if f"frames/{p.name}" not in listed):
            problems.append(f"frames/{extra}: extra file not listed in shot.json frames")
    return (None, problems) if problems else (bundle, [])


def _read_objects(root: Path, entries: object, bundle: ShotBundle, read_image: ImageReader
                  ) -> tuple[list[BundleObject], list[str]]:
    if not isinstance(entries, list):
        return [], ["objects: must be a list"]
    if len(entries) > MAX_OBJECTS:
        return [], [f"objects: {len(entries)} objects, more than the {MAX_OBJECTS} a bundle may list"]
    objects, problems = [], []
    for j, entry in enumerate(entries):
        if not isinstance(entry, dict):
            problems.append(f"objects[{j}]: must be an object")
            continue
        objects.append(BundleObject(id=entry.get("id"), name=entry.get("name"), reference=entry.get("reference")))
    problems += _check_objects(objects)
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
        with zipfile.ZipFile(file) as archive:
            problems = [(info.filename, _npy_member_problem(archive, info, width, height))
                        for info in archive.infolist()]
            problems = [f"frames[{index}].{member.removesuffix('.npy')[:40]}: {problem}"
                        for member, problem in problems if problem]
            if problems:
                return None, problems
        with np.load(file, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}, []
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError) as error:
        return None, [f"{where}: {name} is not a readable npz ({str(error)[:200]})"]


def _npy_member_problem(archive: zipfile.ZipFile, info: zipfile.ZipInfo, width: int, height: int) -> str | None:
    """What is wrong with one array of a frame file, from its name and its .npy header alone (nothing is loaded):
    an unknown pass, a shape other than the pass's at this resolution, or a dtype other than the format's."""
    key = info.filename.removesuffix(".npy")
    if key not in PASS_DTYPES:
        return f"unexpected array, refused before loading (known: {', '.join(PASS_DTYPES)})"
    if info.flag_bits & 0x1 or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return "encrypted or compressed with an unsupported method"
    with archive.open(info) as member:
        try:
            version = np.lib.format.read_magic(member)
            shape, _fortran, dtype = np.lib.format._read_array_header(member, version)
        except (ValueError, SyntaxError, TypeError) as error:
            return f"no valid .npy header ({str(error)[:100]})"
    channels = PASS_CHANNELS[key]
    expected = (height, width) if channels is None else (height, width, channels)
    if tuple(shape) != expected:
        return f"shape {_short(tuple(shape))}, expected {expected} at resolution {width}x{height}"
    if dtype.hasobject:
        return "holds Python objects"
    return None


def bundle_summary(bundle: ShotBundle) -> dict:
    """What the CLI and the server show about a bundle."""
    return {"name": bundle.name, "frames": bundle.num_frames, "frame_start": bundle.frame_start,
            "frame_end": bundle.frame_end, "fps": bundle.fps, "resolution": [bundle.width, bundle.height],
            "objects": [obj.name for obj in bundle.objects],
            "references": sorted(obj.name for obj in bundle.objects if obj.id in bundle.reference_images),
            "prompt": bundle.prompt, "seed": bundle.seed}


# --- zips ---------------------------------------------------------------------------------------------------------

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


def extract_bundle_zip(zip_path: str | Path, dest: str | Path, max_total_bytes: int = MAX_ZIP_BYTES) -> Path:
    """Unpack a bundle zip into ``dest`` and return the bundle folder (``dest``, or its single top folder).

    Entries that could write outside ``dest`` (absolute paths, '..', symlinks) and archives that would unpack to
    more than ``max_total_bytes`` or ``MAX_ZIP_ENTRIES`` files are rejected before anything is written; sizes are
    also counted while unpacking, so a lying header cannot get past the limit.
    """
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty")
    try:
        archive = zipfile.ZipFile(zip_path)
    except (OSError, zipfile.BadZipFile) as error:
        raise BundleError(f"{zip_path}: not a readable zip ({error})") from None
    with archive:
        infos = archive.infolist()
        problems = []
        if len(infos) > MAX_ZIP_ENTRIES:
            problems.append(f"zip: {len(infos)} entries, more than the limit of {MAX_ZIP_ENTRIES}")
        prefix = _single_top_folder(infos)
        for info in infos:
            name = info.filename.rstrip("/") if info.is_dir() else info.filename
            shown = _short(info.filename, 80)
            if not is_safe_relative_path(name):
                problems.append(f"zip entry {shown}: unsafe path (absolute or '..')")
            elif stat.S_ISLNK(info.external_attr >> 16):
                problems.append(f"zip entry {shown}: symlinks are not allowed")
            elif info.flag_bits & 0x1:
                problems.append(f"zip entry {shown}: encrypted entries are not supported")
            elif info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                problems.append(f"zip entry {shown}: compression method {info.compress_type} is not supported "
                                "(use stored or deflated, as shot_bundle.zip_bundle does)")
            elif name + "/" != prefix and not BUNDLE_MEMBERS.fullmatch(name.removeprefix(prefix)):
                problems.append(f"zip entry {shown}: not part of a shot bundle (a bundle holds shot.json, "
                                "frames/NNNNNN.npz and references/*.png)")
            if len(problems) > 20:
                break
        total = sum(info.file_size for info in infos)
        if total > max_total_bytes:
            problems.append(f"zip: unpacks to {total} bytes, more than the limit of {max_total_bytes}")
        if problems:
            raise BundleError(problems)
        created = not dest.exists()
        dest.mkdir(parents=True, exist_ok=True)
        try:
            _unpack(archive, infos, dest, max_total_bytes)
        except (BundleError, zipfile.BadZipFile, zlib.error, EOFError) as error:
            for child in [dest] if created else list(dest.iterdir()):   # leave dest as it was
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
            raise error if isinstance(error, BundleError) else BundleError(f"zip: corrupt entry ({error})") from None
    tops = list(dest.iterdir())
    if not (dest / "shot.json").exists() and len(tops) == 1 and tops[0].is_dir():
        return tops[0]
    return dest


def _single_top_folder(infos: list[zipfile.ZipInfo]) -> str:
    """``"name/"`` when every entry lies under one top folder and there is no shot.json at the root, else ``""``."""
    tops = {info.filename.split("/", 1)[0] for info in infos}
    if len(tops) == 1 and all("/" in info.filename for info in infos) and not tops & {"frames", "references"}:
        return tops.pop() + "/"
    return ""


def _unpack(archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], dest: Path, max_total_bytes: int) -> None:
    written = 0
    for info in infos:
        target = dest / info.filename
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(info) as src, open(target, "wb") as out:
            while chunk := src.read(1 << 20):
                written += len(chunk)
                if written > max_total_bytes:
                    raise BundleError(f"zip: unpacks to more than the limit of {max_total_bytes} bytes")
                out.write(chunk)
