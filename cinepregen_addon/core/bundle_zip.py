"""Unpacking a shot-bundle zip from anyone (an upload, a colleague's file) without letting it harm the machine.

Entries that could write outside the destination (absolute paths, '..', symlinks), entries that are no part of a
bundle, and archives that would unpack to too many files or bytes are refused before anything is written; sizes are
counted again while unpacking, so a lying header cannot get past the limit.
"""

from __future__ import annotations

import re
import shutil
import stat
import zipfile
import zlib
from pathlib import Path

from .bundle_checks import BundleError, is_safe_relative_path, short_repr

MAX_ZIP_ENTRIES = 20000
MAX_ZIP_BYTES = 8 * 1024**3
ZIP64_ENTRIES = 0xFFFF  # the end record's count in a ZIP64 archive (the real one is in its ZIP64 record)
END_RECORD_SEARCH = 22 + 65535  # the end record and the longest comment a zip may carry
BUNDLE_MEMBERS = re.compile(r"shot\.json|frames/?|frames/\d{6}\.npz|references/?|references/[^/]+\.png")


def extract_bundle_zip(zip_path: str | Path, dest: str | Path, max_total_bytes: int = MAX_ZIP_BYTES) -> Path:
    """Unpack a bundle zip into ``dest`` and return the bundle folder (``dest``, or its single top folder).

    Entries that could write outside ``dest`` (absolute paths, '..', symlinks) and archives that would unpack to
    more than ``max_total_bytes`` or ``MAX_ZIP_ENTRIES`` files are rejected before anything is written; sizes are
    also counted while unpacking, so a lying header cannot get past the limit.
    """
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty")
    entries = zip_entry_count(zip_path)
    if entries is not None and entries > MAX_ZIP_ENTRIES:
        raise BundleError(f"zip: {entries} entries, more than the limit of {MAX_ZIP_ENTRIES}")
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
            shown = short_repr(info.filename, 80)
            if not is_safe_relative_path(name):
                problems.append(f"zip entry {shown}: unsafe path (absolute or '..')")
            elif stat.S_ISLNK(info.external_attr >> 16):
                problems.append(f"zip entry {shown}: symlinks are not allowed")
            elif info.flag_bits & 0x1:
                problems.append(f"zip entry {shown}: encrypted entries are not supported")
            elif info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                problems.append(f"zip entry {shown}: compression method {info.compress_type} is not supported "
                                "(use stored or deflated, as shot_bundle.zip_bundle does)")
            elif info.is_dir() and name + "/" != prefix and name.removeprefix(prefix) not in ("frames", "references"):
                problems.append(f"zip entry {shown}: a folder where a shot bundle has a file")
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


def zip_entry_count(path: str | Path) -> int | None:
    """How many entries a zip's end record declares, read from its last bytes (Python's ``zipfile`` first turns the
    whole central directory into objects: a zip of millions of empty entries takes minutes and gigabytes before any
    limit could be checked). A ZIP64 archive's count is read from its ZIP64 end record (``ZIP64_ENTRIES`` when that
    cannot be found: at least that many); None when there is no end record (not a zip: ``zipfile`` says so)."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(max(0, size - END_RECORD_SEARCH))
        tail = f.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < 22:
            return None
        count = int.from_bytes(tail[at + 10 : at + 12], "little")
        if count == ZIP64_ENTRIES and at >= 20 and tail[at - 20 : at - 16] == b"PK\x06\x07":
            f.seek(int.from_bytes(tail[at - 12 : at - 4], "little"))  # the ZIP64 end record, from its locator
            record = f.read(40)
            if record[:4] == b"PK\x06\x06" and len(record) == 40:
                return int.from_bytes(record[32:40], "little")
    return count


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
