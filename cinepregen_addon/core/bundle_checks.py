"""What makes a shot bundle valid: the limits, the pass formats and the checks that reading and writing share.

Every value read from disk or handed to ``write_bundle`` passes these checks, so the backend never trusts a bundle
it did not check; each problem names the field and the frame so a user can fix the scene. Stdlib + numpy only.
"""

from __future__ import annotations

import json
import math
import unicodedata
import zipfile
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .shot_bundle import BundleObject, ShotBundle

SUPPORTED_SCHEMA_VERSIONS = (1,)
PASS_DTYPES = {"depth": np.float32, "normal": np.float32, "object_id": np.int32, "vector": np.float32,
               "clay": np.uint8}
PASS_CHANNELS = {"depth": None, "normal": 3, "object_id": None, "vector": 4, "clay": 3}
OPTIONAL_PASSES = ("clay",)
MAX_RESOLUTION = 16384
MAX_NAME_LENGTH = 200  # shot and object names
MAX_PROMPT_LENGTH = 4000  # characters (text encoders read a few hundred tokens)
MAX_INFO_BYTES = 64 * 1024  # ``style`` and ``shot``, as JSON
MAX_SHOT_JSON_BYTES = 64 * 2**20  # shot.json on disk (a 10,000-frame shot's is about 4 MB)
MIN_FPS = 1.0  # below that no clip can be encoded (ffmpeg's frame rate rounds to 0)
MAX_FPS = 1000.0
MAX_ARRAYS_PER_FRAME = 16  # a frame file holds one array per pass (5); a few unknown ones are each named
MAX_FRAME_NUMBER = 10**9  # |frame_start|, |frame_end| (Blender's own limit is 1,048,574)
MAX_SEED = 2**63 - 1
MAX_OBJECTS = 1024
RIGID_TOLERANCE = 1e-4


class BundleError(ValueError):
    """A shot bundle that cannot be used; ``problems`` lists every reason found."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("invalid shot bundle:\n  " + "\n  ".join(self.problems))


def is_safe_relative_path(path: object) -> bool:
    """Whether ``path`` stays inside the bundle: relative, POSIX, no '..', no drive or backslash."""
    if not isinstance(path, str) or not path or "\\" in path or ":" in path or "\x00" in path:
        return False
    parts = PurePosixPath(path).parts
    return not path.startswith("/") and all(part not in ("", ".", "..") for part in parts)


def check_camera(index: int, K: object, world_to_camera: object) -> list[str]:
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


def check_passes(index: int, arrays: dict[str, np.ndarray], width: int, height: int,
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


def check_objects(objects: list[BundleObject]) -> list[str]:
    if len(objects) > MAX_OBJECTS:
        return [f"objects: {len(objects)} objects, more than the {MAX_OBJECTS} a bundle may list (join or hide "
                "small props, or frame fewer of them)"]
    problems, ids = [], set()
    for j, obj in enumerate(objects):
        if isinstance(obj.id, bool) or not isinstance(obj.id, int) or not 0 < obj.id < 2**31:
            problems.append(f"objects[{j}].id: must be an integer in 1..2^31-1, got {short_repr(obj.id)}")
        elif obj.id in ids:
            problems.append(f"objects[{j}].id: duplicate ID {obj.id}")
        ids.add(obj.id)
        if name_problem := text_problem(obj.name, MAX_NAME_LENGTH):
            problems.append(f"objects[{j}].name: {name_problem}")
        if obj.reference is not None and not is_safe_relative_path(obj.reference):
            problems.append(f"objects[{j}].reference: unsafe path {short_repr(obj.reference)}")
    return problems


def check_header(bundle: ShotBundle) -> list[str]:
    problems = []
    if name_problem := text_problem(bundle.name, MAX_NAME_LENGTH):
        problems.append(f"name: {name_problem}")
    if isinstance(bundle.fps, bool) or not isinstance(bundle.fps, (int, float)) or not (
            math.isfinite(bundle.fps) and MIN_FPS <= bundle.fps <= MAX_FPS):
        problems.append(f"fps: must be a number from {MIN_FPS:g} to {MAX_FPS:g}, got {short_repr(bundle.fps)}")
    for key in ("width", "height"):
        value = getattr(bundle, key)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_RESOLUTION:
            problems.append(f"resolution: {key} must be an integer in 1..{MAX_RESOLUTION}, got {short_repr(value)}")
    for key, low, high in (("frame_start", -MAX_FRAME_NUMBER, MAX_FRAME_NUMBER),
                           ("frame_end", -MAX_FRAME_NUMBER, MAX_FRAME_NUMBER), ("seed", 0, MAX_SEED)):
        value = getattr(bundle, key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            problems.append(f"{key}: must be an integer in {low}..{high}, got {short_repr(value)}")
    if not problems and bundle.frame_end < bundle.frame_start:
        problems.append(f"frame_end: {bundle.frame_end} is before frame_start {bundle.frame_start}")
    if prompt_problem := text_problem(bundle.prompt, MAX_PROMPT_LENGTH, empty=True, line_breaks=True):
        problems.append(f"prompt: {prompt_problem}")
    for key in ("style", "shot"):
        if not isinstance(getattr(bundle, key), dict):
            problems.append(f"{key}: must be an object")
        elif info_problem := _json_problem(getattr(bundle, key)):
            problems.append(f"{key}: {info_problem}")
    return problems


def text_problem(value: object, max_length: int, empty: bool = False, line_breaks: bool = False) -> str | None:
    """What makes ``value`` unusable as a name or prompt, or None. Beyond type and length: text that is not valid
    Unicode (JSON's ``\\ud800`` escape gives a lone surrogate, which no file, database or web page can store) and
    control characters (a NUL cuts a name short in C code; only a prompt may hold line breaks and tabs)."""
    low = 0 if empty else 1
    if not isinstance(value, str) or not low <= len(value) <= max_length:
        return f"must be a string of {low} to {max_length} characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "holds a lone surrogate (\\ud800 to \\udfff), which is not Unicode text"
    allowed = "\n\r\t" if line_breaks else ""
    if any(unicodedata.category(c) == "Cc" and c not in allowed for c in value):
        return "holds control characters"
    return None


def printable_name(name: str) -> str:
    """A Blender name as a bundle may carry it: control characters (which a file from elsewhere can put in an
    object's name) as spaces, cut to ``MAX_NAME_LENGTH``. The bundle binds by ID; the name is a label."""
    cleaned = "".join(" " if unicodedata.category(c) == "Cc" else c for c in name)[:MAX_NAME_LENGTH]
    return cleaned if cleaned.strip() else "unnamed"


def _json_problem(value: object) -> str | None:
    """What keeps a ``style`` or ``shot`` object from being stored as UTF-8 JSON within its budget, or None."""
    try:
        size = len(json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8"))
    except UnicodeEncodeError:
        return "holds text that is not Unicode (a lone surrogate such as \\ud800)"
    except (ValueError, TypeError, RecursionError):
        return "must hold only finite numbers, strings, lists and objects"
    return None if size <= MAX_INFO_BYTES else f"is {size:,} bytes as JSON, more than the {MAX_INFO_BYTES:,} allowed"


def short_repr(value: object, limit: int = 40) -> str:
    """A value for a message, cut short (a 10^30 seed or a 2 MB name must not fill the answer)."""
    huge = isinstance(value, int) and abs(value) >= 10**30
    text = f"an integer of {len(str(value))} digits" if huge else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def check_bundle(bundle: ShotBundle) -> list[str]:
    """Every problem of an in-memory bundle (empty = ok); the same rules that ``validate_bundle`` applies on disk."""
    problems = check_header(bundle)
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
        problems += check_camera(i, camera.K, camera.world_to_camera)
    problems += check_objects(bundle.objects)
    ids = {obj.id for obj in bundle.objects}
    for i, passes in enumerate(bundle.passes):
        problems += check_passes(i, passes.arrays(), bundle.width, bundle.height, ids)
    for object_id, image in bundle.reference_images.items():
        if object_id not in ids:
            problems.append(f"reference_images[{object_id}]: no object with this ID")
        elif not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
                  and image.shape[2] == 3 and image.size > 0):
            problems.append(f"reference_images[{object_id}]: must be an (H, W, 3) uint8 RGB image")
    return problems


def npy_member_problem(archive: zipfile.ZipFile, info: zipfile.ZipInfo, width: int, height: int) -> str | None:
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
        return f"shape {short_repr(tuple(shape))}, expected {expected} at resolution {width}x{height}"
    if dtype.hasobject:
        return "holds Python objects"
    return None
