"""An uploaded bundle zip, from store to accepted: unpacked safely, held to this server's budgets before anything is
decoded, read (which validates it) and previewed. Every refusal is a 4xx naming the problem."""

from __future__ import annotations

import json
import shutil
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException, UploadFile

from backend.bundle_io import png_size, read_shot_bundle
from backend.server.review_page import write_pass_previews
from cinepregen_addon.core import bundle_zip, shot_bundle

if TYPE_CHECKING:
    from backend.server.app import Settings


def accept_bundle(upload: UploadFile, staging: Path, settings: Settings) -> dict[str, Any]:
    """Store, extract, check limits and read (which validates) an uploaded bundle; write its pass previews.
    4xx on any problem."""
    zip_path = staging / "upload.zip"
    with zip_path.open("wb") as out:
        shutil.copyfileobj(upload.file, out, length=2**20)
    with zip_path.open("rb") as f:
        magic = f.read(4)
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise HTTPException(415, f"bundle must be a zip file (shot_bundle.zip_bundle); {upload.filename!r} is not")
    try:
        root = bundle_zip.extract_bundle_zip(
            zip_path, staging / "extracted", max_total_bytes=settings.max_extracted_bytes
        )
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        problems = problem_text(error).replace(str(zip_path), "the upload").replace(str(staging), "the upload")
        raise HTTPException(422, f"bundle zip refused: {problems}") from error
    check_limits(root, settings)
    root.rename(staging / "bundle")
    try:
        bundle = read_shot_bundle(staging / "bundle")
    except shot_bundle.BundleError as error:
        raise HTTPException(422, f"invalid shot bundle: {problem_text(error).replace(str(staging), 'the bundle')}") \
            from error
    previews = write_pass_previews(bundle, staging / "previews")
    referenced = sorted((obj.name, obj.reference) for obj in bundle.objects if obj.id in bundle.reference_images)
    return {**shot_bundle.bundle_summary(bundle), "previews": previews,
            "reference_files": [file for _, file in referenced]}


def problem_text(error: Exception, shown: int = 10) -> str:
    problems = getattr(error, "problems", None) or [str(error)]
    more = f"; and {len(problems) - shown} more" if len(problems) > shown else ""
    return "; ".join(problems[:shown]) + more


def check_limits(root: Path, settings: Settings) -> None:
    """The bundle against this server's budgets, from shot.json and the reference PNGs' headers, before any frame
    or image is decoded: frames, resolution, frames x pixels, objects, and pixels of each reference."""
    try:
        shot = json.loads((root / "shot.json").read_text())
        frames, (width, height) = len(shot["frames"]), shot["resolution"]
        objects = shot.get("objects", [])
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return  # read_bundle names what is wrong with shot.json
    if frames > settings.max_frames:
        raise HTTPException(422, f"the shot has {frames} frames; this server accepts at most {settings.max_frames}")
    if isinstance(objects, list) and len(objects) > settings.max_objects:
        raise HTTPException(422, f"the shot lists {len(objects)} objects; this server accepts at most "
                                 f"{settings.max_objects}")
    if not (isinstance(width, int) and isinstance(height, int)) or isinstance(width, bool):
        return
    if width > settings.max_width or height > settings.max_height:
        raise HTTPException(
            422,
            f"resolution {width}x{height} is larger than this server accepts ({settings.max_width}x"
            f"{settings.max_height})",
        )
    if frames * width * height > settings.max_total_pixels:
        raise HTTPException(422, f"{frames} frames of {width}x{height} are {frames * width * height:,} pixels; this "
                                 f"server accepts at most {settings.max_total_pixels:,} a shot (fewer frames or a "
                                 "smaller resolution)")
    for image in sorted((root / "references").glob("*.png")) if (root / "references").is_dir() else []:
        if not image.is_file():
            continue  # read_bundle refuses it
        size = png_size(image)
        if size is None:
            continue  # read_bundle says what is wrong with it
        if size[0] * size[1] > settings.max_reference_pixels:
            raise HTTPException(422, f"reference {image.name[:80]!r} is {size[0]}x{size[1]} pixels; this server "
                                     f"accepts at most {settings.max_reference_pixels:,} pixels a reference")
