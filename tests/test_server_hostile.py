"""A hostile-input suite against a real backend process on 127.0.0.1 (the app ``cinepregen serve`` runs, with the
real default model behind it and tight limits): every case is answered 4xx with a message that names the problem
and no server path, the server keeps answering health, nothing lands outside its data folder, and its peak memory
over the whole suite stays under 1.2 GB (read from the process's own VmHWM)."""

from __future__ import annotations

import io
import json
import socket
import struct
import subprocess
import sys
import textwrap
import time
import zipfile
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from test_server import bundle_folder, bundle_zip

from cinepregen_addon.core import png_codec

REPO = Path(__file__).resolve().parents[1]
MAX_RSS_BYTES = 1.2 * 2**30
LIMITS = dict(max_upload_bytes=4 * 2**20, max_extracted_bytes=8 * 2**20, max_frames=8, max_width=128,
              max_height=128, max_steps=20, max_total_pixels=8 * 64 * 64, max_objects=8,
              max_reference_pixels=512 * 512)


class ServerProcess:
    """The service in its own Python process, so its memory is its own."""

    def __init__(self, data: Path):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        script = textwrap.dedent(f"""
            import uvicorn
            from pathlib import Path
            from backend.server.app import Settings, create_app
            app = create_app(Settings(data_dir=Path({str(data)!r}), **{LIMITS!r}))
            uvicorn.run(app, host="127.0.0.1", port={self.port}, log_level="warning")
        """)
        self.process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = data
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(self.url + "/v1/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert self.process.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)

    def peak_rss(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) * 1024

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    running = ServerProcess(root / "data")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def done_job(server, tmp_path_factory):
    """One real job run to the end by the default model, for the result routes."""
    zipped = bundle_zip(tmp_path_factory.mktemp("valid"), "valid", frames=2)
    job = httpx.post(server.url + "/v1/jobs", files={"bundle": ("s.zip", zipped.read_bytes())}, data={"steps": "1"},
                     timeout=60).json()
    deadline = time.monotonic() + 300
    while job["status"] not in ("done", "failed", "cancelled"):
        assert time.monotonic() < deadline
        time.sleep(0.3)
        job = httpx.get(f"{server.url}/v1/jobs/{job['id']}", timeout=30).json()
    assert job["status"] == "done", job["error"]
    return job["id"]


# --- building hostile uploads -------------------------------------------------------------------------------------

def _zip(entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=method) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue()


def _folder_entries(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _edited(tmp_path: Path, edit_doc=None, edit_files=None, **bundle) -> bytes:
    """A valid bundle's files with shot.json (a dict) and/or the file map edited, zipped."""
    entries = _folder_entries(bundle_folder(tmp_path, "edit", **bundle))
    if edit_doc is not None:
        doc = json.loads(entries["shot.json"])
        edit_doc(doc)
        entries["shot.json"] = json.dumps(doc).encode() if not isinstance(doc, bytes) else doc
    if edit_files is not None:
        edit_files(entries)
    return _zip(entries)


def _set(path: str, value):
    def edit(doc):
        target = doc
        keys = path.split(".")
        for key in keys[:-1]:
            target = target[int(key)] if key.isdigit() else target[key]
        target[int(keys[-1]) if keys[-1].isdigit() else keys[-1]] = value
    return edit


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    out = io.BytesIO()
    np.savez_compressed(out, **arrays)
    return out.getvalue()


def _frame_arrays(entries: dict[str, bytes], index: int = 0) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(entries[f"frames/{index:06d}.npz"])) as npz:
        return {k: npz[k] for k in npz.files}


def _replace_frame(edit):
    def apply(entries):
        arrays = _frame_arrays(entries)
        edit(arrays)
        entries["frames/000000.npz"] = _npz(arrays)
    return apply


def _npy_with_header(shape: tuple) -> bytes:
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape!r}, }}".encode()
    header += b" " * (63 - len(header) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 64


def _png(width: int, height: int, truncate: bool = False) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\0" + b"\x80" * (3 * width) for _ in range(min(height, 4)))
    png = png_codec.PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    return png[:40] if truncate else png


def _with_reference(png: bytes):
    def apply(doc_entries):
        doc_entries["references/1-Crate.png"] = png
    return apply


def _reference_doc(doc):
    doc["objects"][0]["reference"] = "references/1-Crate.png"


def _encrypted(tmp_path: Path) -> bytes:
    raw = bytearray(_zip(_folder_entries(bundle_folder(tmp_path, "enc")), zipfile.ZIP_STORED))
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # set the "encrypted" flag bit
        pos = raw.find(signature)
        while pos != -1:
            raw[pos + offset] |= 0x1
            pos = raw.find(signature, pos + 4)
    return bytes(raw)


def _too_many_objects(doc):
    doc["objects"] = [{"id": i, "name": f"O{i}", "reference": None} for i in range(1, 12)]


UPLOADS = {  # case -> (builder(tmp_path) -> zip bytes, status, words)
    "not_a_zip": (lambda t: b"GIF89a not a zip", 415, "must be a zip"),
    "empty_zip": (lambda t: _zip({}), 422, "shot.json"),
    "truncated_zip": (lambda t: bundle_zip(t, "tr").read_bytes()[:300], 422, "zip"),
    "traversal_entry": (lambda t: _zip({"../evil.txt": b"x", "shot.json": b"{}"}), 422, "unsafe path"),
    "absolute_entry": (lambda t: _zip({"/etc/evil": b"x"}), 422, "unsafe path"),
    "unknown_root_file": (lambda t: _edited(t, edit_files=lambda e: e.update({"junk.bin": bytes(1000)})), 422,
                          "not part of a shot bundle"),
    "long_entry_name": (lambda t: _edited(t, edit_files=lambda e: e.update({"a" * 300: b"x"})), 422,
                        "not part of a shot bundle"),
    "encrypted_entries": (_encrypted, 422, "encrypted"),
    "bzip2_entries": (lambda t: _zip(_folder_entries(bundle_folder(t, "bz")), zipfile.ZIP_BZIP2), 422,
                      "compression method"),
    "zip_bomb": (lambda t: _zip({"shot.json": b" " * (9 * 2**20)}), 422, "limit"),
    "no_shot_json": (lambda t: _edited(t, edit_files=lambda e: e.pop("shot.json")), 422, "shot.json: missing"),
    "shot_json_not_json": (lambda t: _edited(t, edit_files=lambda e: e.update({"shot.json": b"{"})), 422,
                           "not valid JSON"),
    "deeply_nested_json": (lambda t: _edited(t, edit_files=lambda e: e.update({"shot.json": b"[" * 100000})), 422,
                           "nested too deeply"),
    "huge_integer_json": (lambda t: _edited(t, edit_files=lambda e: e.update(
        {"shot.json": b'{"seed": ' + b"9" * 5000 + b"}"})), 422, "shot.json"),
    "seed_1e30": (lambda t: _edited(t, _set("seed", 10**30)), 422, "seed"),
    "negative_seed_in_bundle": (lambda t: _edited(t, _set("seed", -5)), 422, "seed"),
    "fps_1e308": (lambda t: _edited(t, _set("fps", 1e308)), 422, "fps"),
    "fps_zero": (lambda t: _edited(t, _set("fps", 0)), 422, "fps"),
    "fps_nan": (lambda t: _edited(t, edit_files=lambda e: e.update(
        {"shot.json": e["shot.json"].replace(b'"fps": 12', b'"fps": NaN')})), 422, "fps"),
    "fps_string": (lambda t: _edited(t, _set("fps", "fast")), 422, "fps"),
    "name_2mb": (lambda t: _edited(t, _set("name", "n" * 2_000_000)), 422, "name"),
    "name_empty": (lambda t: _edited(t, _set("name", "")), 422, "name"),
    "name_lone_surrogate": (lambda t: _edited(t, _set("name", "shot\ud800")), 422, "lone surrogate"),
    "name_with_nul": (lambda t: _edited(t, _set("name", "shot\x00")), 422, "control characters"),
    "prompt_lone_surrogate": (lambda t: _edited(t, _set("prompt", "hello \udcff")), 422, "lone surrogate"),
    "prompt_100k": (lambda t: _edited(t, _set("prompt", "p" * 100_000)), 422, "prompt"),
    "fps_1e-7": (lambda t: _edited(t, _set("fps", 1e-7)), 422, "fps"),
    "schema_version_99": (lambda t: _edited(t, _set("schema_version", 99)), 422, "schema_version"),
    "resolution_not_a_list": (lambda t: _edited(t, _set("resolution", "32x18")), 422, "resolution"),
    "resolution_over_limit": (lambda t: _edited(t, _set("resolution", [4096, 18])), 422, "larger than"),
    "resolution_negative": (lambda t: _edited(t, _set("resolution", [-32, 18])), 422, "resolution"),
    "too_many_frames": (lambda t: bundle_zip(t, "many", frames=9).read_bytes(), 422, "at most 8"),
    "pixel_budget": (lambda t: bundle_zip(t, "px", frames=8, width=96, height=64).read_bytes(), 422, "pixels"),
    "frame_end_before_start": (lambda t: _edited(t, _set("frame_end", -3)), 422, "frame"),
    "frame_start_huge": (lambda t: _edited(t, _set("frame_start", 10**12)), 422, "frame_start"),
    "frames_not_a_list": (lambda t: _edited(t, _set("frames", {"a": 1})), 422, "frames"),
    "frames_entry_missing": (lambda t: _edited(t, lambda d: d["frames"].pop()), 422, "frames"),
    "frame_index_wrong": (lambda t: _edited(t, _set("frames.1.index", 7)), 422, "index"),
    "frame_file_traversal": (lambda t: _edited(t, _set("frames.0.file", "../../etc/passwd")), 422, "unsafe path"),
    "K_with_nan": (lambda t: _edited(t, edit_files=lambda e: e.update({"shot.json": e["shot.json"].replace(
        b"30.0", b"NaN", 1)})), 422, "K"),
    "world_to_camera_3x3": (lambda t: _edited(t, _set("frames.0.world_to_camera", [[1, 0, 0], [0, 1, 0], [0, 0, 1]])),
                            422, "world_to_camera"),
    "too_many_objects": (lambda t: _edited(t, _too_many_objects), 422, "objects"),
    "object_id_zero": (lambda t: _edited(t, _set("objects.0.id", 0)), 422, "id"),
    "object_id_huge": (lambda t: _edited(t, _set("objects.0.id", 10**40)), 422, "id"),
    "object_name_too_long": (lambda t: _edited(t, _set("objects.0.name", "x" * 500)), 422, "name"),
    "object_not_a_dict": (lambda t: _edited(t, _set("objects.0", 17)), 422, "objects[0]"),
    "reference_traversal": (lambda t: _edited(t, _set("objects.0.reference", "../secret.png")), 422, "unsafe"),
    "reference_missing": (lambda t: _edited(t, _reference_doc), 422, "missing"),
    "reference_not_png": (lambda t: _edited(t, _reference_doc, _with_reference(b"GIF89a....")), 422, "PNG"),
    "reference_8192_declared": (lambda t: _edited(t, _reference_doc, _with_reference(_png(8192, 8192))), 422,
                                "pixels"),
    "reference_truncated": (lambda t: _edited(t, _reference_doc, _with_reference(_png(16, 16, truncate=True))), 422,
                            "reference"),
    "npz_unknown_member": (lambda t: _edited(t, edit_files=_replace_frame(
        lambda a: a.update({"payload": np.zeros(10**6, np.uint8)}))), 422, "unexpected"),
    "npy_header_4tib": (lambda t: _edited(t, edit_files=lambda e: e.update({"frames/000000.npz": _zip(
        {"depth.npy": _npy_with_header((2**20, 2**20))}, zipfile.ZIP_STORED)})), 422, "shape"),
    "npz_pickled_objects": (lambda t: _edited(t, edit_files=lambda e: e.update({"frames/000000.npz": _zip(
        {"depth.npy": b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, 'shape': (18, 32), }"
         + b" " * 45 + b"\n" + b"junk"}, zipfile.ZIP_STORED)})), 422, "frames[0]"),
    "npz_wrong_dtype": (lambda t: _edited(t, edit_files=_replace_frame(
        lambda a: a.update({"depth": a["depth"].astype(np.float64)}))), 422, "depth"),
    "npz_nan_depth": (lambda t: _edited(t, edit_files=_replace_frame(
        lambda a: a["depth"].__setitem__((5, 5), np.nan))), 422, "depth"),
    "npz_unlisted_object_id": (lambda t: _edited(t, edit_files=_replace_frame(
        lambda a: a["object_id"].__setitem__((5, 5), 77))), 422, "77"),
    "npz_not_a_zip": (lambda t: _edited(t, edit_files=lambda e: e.update({"frames/000000.npz": b"garbage"})), 422,
                      "npz"),
    "npz_many_members": (lambda t: _edited(t, edit_files=_replace_frame(
        lambda a: a.update({f"p{i}": np.zeros(1, np.uint8) for i in range(3000)}))), 422, "too many arrays"),
    "unreferenced_reference": (lambda t: _edited(t, edit_files=lambda e: e.update(
        {"references/junk.png": _png(16, 16)})), 422, "extra file"),
    "folder_named_like_a_reference": (lambda t: _edited(t, edit_files=lambda e: e.update(
        {"references/evil.png/": b""})), 422, "a folder where"),
    "npz_missing_pass": (lambda t: _edited(t, edit_files=_replace_frame(lambda a: a.pop("normal"))), 422,
                         "normal"),
}


@pytest.mark.parametrize("case", sorted(UPLOADS))
def test_hostile_upload(server, tmp_path, case):
    build, status, words = UPLOADS[case]
    answer = httpx.post(server.url + "/v1/jobs", files={"bundle": ("shot.zip", build(tmp_path))}, timeout=120)
    _check(server, answer, status, words)


def _raw(server, request: bytes) -> tuple[int, str]:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
        conn.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.find(b"\r\n\r\n") + 4 + _length(data):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode(errors="replace")


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def _multipart(payload: bytes) -> tuple[bytes, bytes]:
    body = (b"--x\r\nContent-Disposition: form-data; name=\"bundle\"; filename=\"s.zip\"\r\n"
            b"Content-Type: application/zip\r\n\r\n" + payload + b"\r\n--x--\r\n")
    return b"multipart/form-data; boundary=x", body


def _chunked(body: bytes, size: int = 65536) -> bytes:
    return b"".join(f"{len(body[i:i + size]):x}\r\n".encode() + body[i:i + size] + b"\r\n"
                    for i in range(0, len(body), size)) + b"0\r\n\r\n"


def _chunked_upload(port: int, payload: bytes, content_length: bool) -> bytes:
    kind, body = _multipart(payload)
    head = b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: %s\r\n" % (port, kind)
    if content_length:
        head += b"Content-Length: 10\r\n"  # smaller than the limit; the chunked body is not
    return head + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(body)


def _get(host: bytes, path: bytes = b"/v1/jobs") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"


RAW = {  # case -> (request builder(port), status, words)
    "chunked_with_content_length_over_limit": (lambda port: _chunked_upload(port, bytes(5 * 2**20), True), 411,
                                               "transfer-encoding"),
    "chunked_only": (lambda port: _chunked_upload(port, b"PK\x03\x04", False), 411, "content-length"),
    "no_content_length": (lambda port: b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n"
                          % port, 411, "content-length"),
    "content_length_over_limit": (lambda port: b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                                  b"Content-Length: 999999999999\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                                  b"Connection: close\r\n\r\n" % port, 413, "at most"),
    "foreign_host_get": (lambda port: _get(b"evil.example"), 403, "loopback"),
    "rebinding_host_with_port": (lambda port: _get(b"attacker.test:%d" % port, b"/v1/health"), 403, "loopback"),
    "no_host_header": (lambda port: b"GET /v1/jobs HTTP/1.0\r\n\r\n", 403, "loopback"),
}


@pytest.mark.parametrize("case", sorted(RAW))
def test_hostile_raw_request(server, case):
    build, status, words = RAW[case]
    code, body = _raw(server, build(server.port))
    assert code == status, body
    assert words.lower() in json.loads(body)["detail"].lower()
    _check_alive(server)


def _valid(tmp_path: Path) -> dict:
    return {"bundle": ("s.zip", bundle_zip(tmp_path, "ok").read_bytes())}


REQUESTS = {  # case -> (method, path, kwargs builder(tmp_path, job_id), status, words)
    "cross_origin_post": ("POST", "/v1/jobs", lambda t, j: {"files": _valid(t), "headers": {
        "Origin": "http://evil.example"}}, 403, "cross-origin"),
    "cross_origin_delete": ("DELETE", "/v1/jobs/{job}", lambda t, j: {"headers": {"Origin": "https://evil.example"}},
                            403, "cross-origin"),
    "same_site_other_port_origin": ("POST", "/v1/jobs", lambda t, j: {"files": _valid(t), "headers": {
        "Origin": "http://127.0.0.1:1"}}, 403, "cross-origin"),
    "null_origin": ("POST", "/v1/jobs", lambda t, j: {"files": _valid(t), "headers": {"Origin": "null"}}, 403,
                    "without an origin"),
    "sec_fetch_cross_site": ("POST", "/v1/jobs", lambda t, j: {"files": _valid(t), "headers": {
        "Sec-Fetch-Site": "cross-site"}}, 403, "cross-origin"),
    "foreign_host_post": ("POST", "/v1/jobs", lambda t, j: {"files": _valid(t), "headers": {"Host": "evil.example"}},
                          403, "loopback"),
    "steps_zero": ("POST", "/v1/jobs", lambda t, j: {"files": _valid(t), "data": {"steps": "0"}}, 422, "steps"),
    "steps_huge": ("POST", "/v1/jobs", lambda t, j: {"files": _valid(t), "data": {"steps": "10000000000"}}, 422,
                   "steps"),
    "seed_2_64": ("POST", "/v1/jobs", lambda t, j: {"files": _valid(t), "data": {"seed": str(2**64)}}, 422, "seed"),
    "seed_text": ("POST", "/v1/jobs", lambda t, j: {"files": _valid(t), "data": {"seed": "lucky"}}, 422, "seed"),
    "steps_half_a_megabyte": ("POST", "/v1/jobs", lambda t, j: {"files": _valid(t), "data": {"steps": "9x" * 250_000}},
                              422, "steps"),
    "bundle_field_missing": ("POST", "/v1/jobs", lambda t, j: {"data": {"steps": "2"}}, 422, "bundle"),
    "unknown_job": ("GET", "/v1/jobs/" + "ab" * 16, lambda t, j: {}, 404, "no job"),
    "malformed_job_id": ("GET", "/v1/jobs/not-a-job", lambda t, j: {}, 422, "malformed job id"),
    "encoded_traversal": ("GET", "/v1/jobs/..%2F..%2Fetc", lambda t, j: {}, 404, "no route"),
    "method_not_allowed": ("PUT", "/v1/jobs", lambda t, j: {}, 405, "not allowed"),
    "frame_index_superscript": ("GET", "/v1/jobs/{job}/frames/%C2%B2.png", lambda t, j: {}, 422, "frame index"),
    "frame_index_huge": ("GET", "/v1/jobs/{job}/frames/99999999999999999999.png", lambda t, j: {}, 422,
                         "frame index"),
    "frame_index_out_of_range": ("GET", "/v1/jobs/{job}/frames/5.png", lambda t, j: {}, 404, "there is no frame"),
    "unknown_preview": ("GET", "/v1/jobs/{job}/previews/secrets.png", lambda t, j: {}, 404, "no preview"),
    "cancel_finished_job": ("DELETE", "/v1/jobs/{job}", lambda t, j: {}, 409, "already done"),
    "delete_files_of_unknown_job": ("DELETE", "/v1/jobs/" + "cd" * 16 + "?files=true", lambda t, j: {}, 404,
                                    "no job"),
    "files_flag_not_boolean": ("DELETE", "/v1/jobs/{job}?files=maybe", lambda t, j: {}, 422, "files"),
}


@pytest.mark.parametrize("case", sorted(REQUESTS))
def test_hostile_request(server, done_job, tmp_path, case):
    method, path, kwargs, status, words = REQUESTS[case]
    answer = httpx.request(method, server.url + path.replace("{job}", done_job), timeout=60, **kwargs(tmp_path,
                                                                                                       done_job))
    _check(server, answer, status, words)


def _check(server, answer: httpx.Response, status: int, words: str) -> None:
    assert answer.status_code == status, answer.text[:500]
    detail = answer.json()["detail"]
    assert isinstance(detail, str) and words.lower() in detail.lower(), detail[:500]
    assert len(detail) < 4000 and str(server.data) not in detail and str(server.data.parent) not in detail
    _check_alive(server)


def _check_alive(server) -> None:
    assert httpx.get(server.url + "/v1/health", timeout=30).status_code == 200
    assert not any((server.data / "incoming").glob("*"))  # nothing half-accepted
    outside = {p.name for p in server.data.parent.iterdir()} - {"data"}
    assert not outside, outside  # nothing written beside the data folder
    listed = {job["id"] for job in httpx.get(server.url + "/v1/jobs", timeout=30).json()}
    folders = {p.name for p in (server.data / "jobs").iterdir()} if (server.data / "jobs").is_dir() else set()
    assert folders == listed  # no job folder left without its job


def test_zz_peak_memory_over_the_suite(server):
    """Runs after the cases above (pytest keeps file order): the whole hostile run stayed within 1.2 GB."""
    peak = server.peak_rss()
    print(f"server peak RSS over the hostile suite: {peak / 2**20:.0f} MiB")
    assert peak < MAX_RSS_BYTES
    jobs = httpx.get(server.url + "/v1/jobs", timeout=30).json()
    assert len(jobs) == 1  # only the valid job of the fixture was accepted
