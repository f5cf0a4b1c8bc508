"""The backend service on a real uvicorn server on 127.0.0.1: real bundles, real files, a real (light) generate
function, real restarts on the same data folder, and the review board in headless Chromium."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from backend.server.app import Settings, create_app
from backend.server.guard import check_bind
from backend.server.process import DataFolderBusy, serve_in_thread
from cinepregen_addon.core import shot_bundle

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


# ----------------------------------------------------------------------------------------------------------------
# Real bundles, a real generate function and a real server
# ----------------------------------------------------------------------------------------------------------------


def make_bundle(frames: int = 3, width: int = 32, height: int = 18, name: str = "shot_a") -> shot_bundle.ShotBundle:
    """A dolly-in on a box in front of a wall: object 1 is nearer than the wall, the top rows are empty sky."""
    K = np.array([[30.0, 0, width / 2 - 0.5], [0, 30.0, height / 2 - 0.5], [0, 0, 1]])
    cameras, passes = [], []
    for i in range(frames):
        dolly = i / max(frames - 1, 1)  # metres travelled so far
        world_to_camera = np.eye(4)
        world_to_camera[2, 3] = -dolly
        depth = np.full((height, width), 4.0 - dolly, np.float32)
        object_id = np.zeros((height, width), np.int32)
        object_id[height // 3 :, width // 4 : width // 2] = 1
        depth[object_id == 1] = 2.0 - dolly
        depth[:2] = 0.0
        normal = np.zeros((height, width, 3), np.float32)
        normal[depth > 0] = (0.0, 0.0, -1.0)
        vector = np.zeros((height, width, 4), np.float32)
        cameras.append(shot_bundle.FrameCamera(frame=1 + i, K=K, world_to_camera=world_to_camera))
        passes.append(shot_bundle.FramePasses(depth=depth, normal=normal, object_id=object_id, vector=vector))
    return shot_bundle.ShotBundle(
        name=name,
        fps=12,
        width=width,
        height=height,
        frame_start=1,
        frame_end=frames,
        cameras=cameras,
        passes=passes,
        objects=[shot_bundle.BundleObject(id=1, name="Crate", reference=None)],
        prompt="a crate in a yard",
        seed=3,
        style={},
        shot={"move": "dolly_in", "lens_mm": 35.0},
        reference_images={},
    )


def bundle_folder(tmp_path: Path, tag: str = "b", **kwargs) -> Path:
    return shot_bundle.write_bundle(make_bundle(**kwargs), tmp_path / f"bundle_{tag}")


def bundle_zip(tmp_path: Path, tag: str = "b", **kwargs) -> Path:
    return shot_bundle.zip_bundle(bundle_folder(tmp_path, tag, **kwargs), tmp_path / f"bundle_{tag}.zip")


class JobCancelled(Exception):
    pass


class DepthClip:
    """A light but real generate function: reads the bundle, writes the depth pass as PNG frames and an H.264 mp4,
    reports progress per step and stops when asked. ``hold_at`` parks it at that step until ``release()``."""

    def __init__(self, hold_at: int | None = None):
        self.hold_at = hold_at
        self.gate = threading.Event()
        self.cancel_seen = threading.Event()

    def release(self) -> None:
        self.gate.set()

    def __call__(self, bundle_dir, out_dir, *, steps, seed, progress, should_cancel, model=None) -> dict:
        bundle = shot_bundle.read_bundle(bundle_dir)
        steps = steps or 4
        for step in range(steps):
            progress(step / steps, f"step {step + 1}/{steps}")
            while step == self.hold_at and not self.gate.wait(0.02):
                if should_cancel():
                    break
            if should_cancel():
                self.cancel_seen.set()
                raise JobCancelled(f"stopped at step {step + 1}")
        frames = []
        for passes in bundle.passes:
            grey = np.where(passes.depth > 0, 255 - passes.depth * 50, 0).clip(0, 255).astype(np.uint8)
            frames.append(np.repeat(grey[..., None], 3, axis=-1))
        frames_dir = Path(out_dir) / "frames"
        frames_dir.mkdir()
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(frames_dir / f"{i:06d}.png")
        mp4 = Path(out_dir) / "clip.mp4"
        writer = imageio_ffmpeg.write_frames(
            str(mp4), (bundle.width, bundle.height), fps=bundle.fps, codec="libx264", macro_block_size=2
        )
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame).tobytes())
        writer.close()
        progress(1.0, "encoded")
        metrics = {"frames": len(frames), "mean_depth": float(np.mean([p.depth.mean() for p in bundle.passes]))}
        return {"mp4": mp4, "frames_dir": frames_dir, "metrics": metrics, "timings": {"steps": steps, "seed": seed}}


class LiveServer:
    """``create_app`` served by a real uvicorn on a free 127.0.0.1 port; leaving it runs the app's shutdown."""

    def __init__(self, settings: Settings, generate_fn):
        self.settings = settings
        self._serving = serve_in_thread(create_app(settings, generate_fn))

    def __enter__(self) -> LiveServer:
        self.url = self._serving.__enter__()
        headers = {"Authorization": f"Bearer {self.settings.token}"} if self.settings.token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=30)
        return self

    def __exit__(self, *exc) -> None:
        self.http.close()
        self._serving.__exit__(*exc)

    def submit(self, zip_path: Path, **fields) -> str:
        with open(zip_path, "rb") as f:
            answer = self.http.post("/v1/jobs", files={"bundle": (zip_path.name, f, "application/zip")}, data=fields)
        assert answer.status_code == 201, answer.text
        return answer.json()["id"]

    def wait_for(self, job_id: str, condition, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.http.get(f"/v1/jobs/{job_id}").json()
            if condition(job):
                return job
            assert time.monotonic() < deadline, f"job never reached the expected state: {job}"
            time.sleep(0.02)


def finished(job: dict) -> bool:
    return job["status"] in ("done", "failed", "cancelled")


def read_mp4(path: Path) -> list[np.ndarray]:
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    width, height = meta["size"]
    return [np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in reader]


# ----------------------------------------------------------------------------------------------------------------
# The job lifecycle
# ----------------------------------------------------------------------------------------------------------------


def test_submit_progress_and_result_download(tmp_path):
    generate = DepthClip(hold_at=2)
    with LiveServer(Settings(data_dir=tmp_path / "data"), generate) as server:
        job_id = server.submit(bundle_zip(tmp_path, frames=3), steps="4", seed="11")
        held = server.wait_for(job_id, lambda j: j["status"] == "running" and j["progress"] == 0.5)
        assert held["stage"] == "step 3/4" and held["settings"] == {"steps": 4, "seed": 11, "model": "previs-tiny"}
        generate.release()
        job = server.wait_for(job_id, finished)
        assert job["status"] == "done", job["error"]
        assert job["progress"] == 1.0 and job["error"] is None and job["attempts"] == 1
        assert job["timings"]["model"] == {"steps": 4, "seed": 11} and job["timings"]["generate_s"] > 0
        assert job["name"] == "shot_a" and job["frames"] == 3 and job["resolution"] == [32, 18]

        clip = server.http.get(f"/v1/jobs/{job_id}/result.mp4")
        assert clip.status_code == 200 and clip.headers["content-type"] == "video/mp4"
        head = server.http.head(f"/v1/jobs/{job_id}/result.mp4")  # curl -I: the head only
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(clip.content))
        assert server.http.head("/v1/health").status_code == 200
        (tmp_path / "result.mp4").write_bytes(clip.content)
        frames = read_mp4(tmp_path / "result.mp4")
        assert len(frames) == 3 and frames[0].shape == (18, 32, 3)
        # the crate (object 1) is nearer than the wall, so brighter; the sky rows are black
        assert frames[0][12, 10].mean() > frames[0][12, 25].mean() + 40 and frames[0][0].mean() < 20

        metrics = server.http.get(f"/v1/jobs/{job_id}/metrics.json").json()
        assert metrics["metrics"]["frames"] == 3 and metrics["timings"] == job["timings"]
        assert job["links"]["frame_count"] == 3
        png = server.http.get(f"/v1/jobs/{job_id}/frames/2.png")
        assert png.status_code == 200 and Image.open(io.BytesIO(png.content)).size == (32, 18)
        assert server.http.get(f"/v1/jobs/{job_id}/frames/3.png").status_code == 404
        assert "frame index" in server.http.get(f"/v1/jobs/{job_id}/frames/x.png").json()["detail"]
        previews = {}
        for name in ("depth", "normal", "object_id"):
            answer = server.http.get(f"/v1/jobs/{job_id}/previews/{name}.png")
            previews[name] = np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGB")).astype(int)
        # three frames side by side at 72 px high (x4): crate nearer than wall is brighter; sky black; ids coloured
        assert previews["depth"].shape == (72, 3 * 128 + 2 * 2, 3)
        assert previews["depth"][48, 40].sum() > previews["depth"][48, 100].sum() > 0 == previews["depth"][2].sum()
        assert previews["object_id"][48, 40].sum() > 0 == previews["object_id"][48, 100].sum()
        assert "/v1/jobs" in server.http.get("/openapi.json").json()["paths"]
        assert server.http.get("/docs").status_code == 200
        job_dir = tmp_path / "data" / "jobs" / job_id
        assert sorted(p.name for p in (job_dir / "result").iterdir()) == ["frames", "metrics.json", "result.mp4"]
        assert not (job_dir / "result.partial").exists() and not any((tmp_path / "data" / "incoming").iterdir())
        assert server.http.get("/v1/health").json()["queue_length"] == 0


def test_cancel_queued_then_running_job(tmp_path):
    generate = DepthClip(hold_at=1)
    with LiveServer(Settings(data_dir=tmp_path / "data"), generate) as server:
        running = server.submit(bundle_zip(tmp_path, "r"))
        server.wait_for(running, lambda j: j["status"] == "running")
        queued = server.submit(bundle_zip(tmp_path, "q"))
        assert server.http.get("/v1/health").json()["queue_length"] == 1

        answer = server.http.delete(f"/v1/jobs/{queued}")
        assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
        answer = server.http.delete(f"/v1/jobs/{running}")
        assert answer.status_code == 200 and answer.json()["cancel_requested"] is True
        job = server.wait_for(running, finished)
        assert job["status"] == "cancelled" and generate.cancel_seen.is_set()
        assert not (tmp_path / "data" / "jobs" / running / "result.partial").exists()
        again = server.http.delete(f"/v1/jobs/{running}")
        assert again.status_code == 409 and "already cancelled" in again.json()["detail"]
        assert server.http.get(f"/v1/jobs/{running}/result.mp4").status_code == 409

        generate.hold_at = None  # the worker survived both cancels and runs the next shot
        after = server.submit(bundle_zip(tmp_path, "n"))
        assert server.wait_for(after, finished)["status"] == "done"
        assert server.http.get(f"/v1/jobs/{queued}").json()["status"] == "cancelled"


def test_two_clients_submit_at_once(tmp_path):
    zips = {2: bundle_zip(tmp_path, "two", frames=2), 4: bundle_zip(tmp_path, "four", frames=4, name="shot_b")}
    submitted: dict[int, list[str]] = {2: [], 4: []}
    with LiveServer(Settings(data_dir=tmp_path / "data"), DepthClip()) as server:

        def client(frames: int) -> None:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                for _ in range(2):
                    with open(zips[frames], "rb") as f:
                        answer = http.post("/v1/jobs", files={"bundle": ("b.zip", f)})
                    submitted[frames].append(answer.json()["id"])

        threads = [threading.Thread(target=client, args=(n,)) for n in zips]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ids = submitted[2] + submitted[4]
        assert len(set(ids)) == 4
        listed = {job["id"] for job in server.http.get("/v1/jobs").json()}
        assert listed == set(ids)
        for frames, job_ids in submitted.items():
            for job_id in job_ids:
                job = server.wait_for(job_id, finished)
                assert job["status"] == "done" and job["frames"] == frames
                clip = tmp_path / f"{job_id}.mp4"
                clip.write_bytes(server.http.get(f"/v1/jobs/{job_id}/result.mp4").content)
                assert len(read_mp4(clip)) == frames


def test_restart_keeps_queued_and_finished_jobs(tmp_path):
    data = tmp_path / "data"
    generate = DepthClip()
    with LiveServer(Settings(data_dir=data), generate) as server:
        done_id = server.submit(bundle_zip(tmp_path, "d"))
        assert server.wait_for(done_id, finished)["status"] == "done"
        clip = server.http.get(f"/v1/jobs/{done_id}/result.mp4").content
        generate.hold_at = 0
        interrupted = server.submit(bundle_zip(tmp_path, "i"))
        server.wait_for(interrupted, lambda j: j["status"] == "running")
        queued = server.submit(bundle_zip(tmp_path, "q"))
    # the server stopped with one job running and one waiting

    with LiveServer(Settings(data_dir=data), DepthClip()) as server:
        assert server.http.get(f"/v1/jobs/{done_id}/result.mp4").content == clip
        for job_id in (interrupted, queued):
            job = server.wait_for(job_id, finished)
            assert job["status"] == "done" and job["attempts"] == 1, job  # a clean stop is not a failed attempt
        assert [j["status"] for j in server.http.get("/v1/jobs").json()] == ["done"] * 3
        assert not list(data.glob("jobs/*/result.partial"))


def test_crash_mid_job_is_requeued_then_failed_after_two_attempts(tmp_path):
    data = tmp_path / "data"
    with LiveServer(Settings(data_dir=data), DepthClip(hold_at=0)) as server:
        first = server.submit(bundle_zip(tmp_path, "1"))
        server.wait_for(first, lambda j: j["status"] == "running")
        second = server.submit(bundle_zip(tmp_path, "2"))
    # what a crash leaves: both jobs 'running' in the database, a half-written result on disk
    with sqlite3.connect(data / "jobs.sqlite") as db:
        db.execute("UPDATE jobs SET status = 'running', attempts = 1 WHERE id = ?", (first,))
        db.execute("UPDATE jobs SET status = 'running', attempts = 2 WHERE id = ?", (second,))
    (data / "jobs" / first / "result.partial").mkdir()
    (data / "jobs" / first / "result.partial" / "clip.mp4").write_bytes(b"half a clip")

    with LiveServer(Settings(data_dir=data), DepthClip()) as server:
        retried = server.wait_for(first, finished)
        assert retried["status"] == "done" and retried["attempts"] == 2
        gave_up = server.http.get(f"/v1/jobs/{second}").json()
        assert gave_up["status"] == "failed" and "2 times" in gave_up["error"]
        assert not (data / "jobs" / first / "result.partial").exists()


def test_failing_model_marks_the_job_failed_and_the_worker_goes_on(tmp_path):
    calls = []

    def generate(bundle_dir, out_dir, **kwargs):
        calls.append(bundle_dir)
        if len(calls) == 1:
            raise RuntimeError("weights folder has no config.json")
        return DepthClip()(bundle_dir, out_dir, **kwargs)

    with LiveServer(Settings(data_dir=tmp_path / "data"), generate) as server:
        broken = server.wait_for(server.submit(bundle_zip(tmp_path, "x")), finished)
        assert broken["status"] == "failed" and broken["error"] == "RuntimeError: weights folder has no config.json"
        assert server.wait_for(server.submit(bundle_zip(tmp_path, "y")), finished)["status"] == "done"


def test_default_generate_fn_runs_the_previs_pipeline(tmp_path):
    """Without an injected function the worker runs ``generate_shot`` with the configured weights (a tiny model)."""
    from backend.models.previs_dit import PrevisDiT
    from backend.models.reference_encoder import ReferenceEncoder
    from backend.pipelines.previs_pipeline import PrevisPipeline

    encoder = ReferenceEncoder(reference_dim=32, width=16, num_heads=2)
    weights = PrevisPipeline(PrevisDiT.from_preset("tiny-test"), encoder).save_pretrained(tmp_path / "weights")
    with LiveServer(Settings(data_dir=tmp_path / "data", weights=weights), None) as server:
        health = server.http.get("/v1/health").json()
        assert health["model"] == "PrevisDiT" and health["weights"] == weights.name and health["weights_found"]
        assert str(tmp_path) not in json.dumps(health)  # no server paths in answers
        assert health["quantization"] == "none (full precision)"
        job = server.wait_for(server.submit(bundle_zip(tmp_path, frames=2, width=32, height=24), steps="2"), finished)
        assert job["status"] == "done", job["error"]
        assert job["timings"]["model"]["denoise_s"] > 0
        clip = tmp_path / "clip.mp4"
        clip.write_bytes(server.http.get(f"/v1/jobs/{job['id']}/result.mp4").content)
        assert len(read_mp4(clip)) == 2 and read_mp4(clip)[0].shape == (24, 32, 3)
        assert server.http.get(f"/v1/jobs/{job['id']}/metrics.json").json()["metrics"]["steps"] == 2


def test_catalogue_serves_each_job_with_the_model_it_names(tmp_path):
    """Two real tiny models on one server: health lists both with what each can do, a job runs the model it names
    (or the default), and a name the server does not serve is refused at submission with the names it does."""
    from backend.models.previs_dit import PrevisDiT
    from backend.models.reference_encoder import ReferenceEncoder
    from backend.pipelines.previs_pipeline import PrevisPipeline

    folders = []
    for name, steps in (("fast", 2), ("slow", 3)):
        encoder = ReferenceEncoder(reference_dim=32, width=16, num_heads=2)
        pipeline = PrevisPipeline(PrevisDiT.from_preset("tiny-test"), encoder, sampling={"num_inference_steps": steps})
        folders.append(pipeline.save_pretrained(tmp_path / name))
    (tmp_path / "broken" / "transformer").mkdir(parents=True)
    settings = Settings(data_dir=tmp_path / "data", weights=folders[0], models=(folders[1], tmp_path / "broken"))
    with LiveServer(settings, None) as server:
        health = server.http.get("/v1/health").json()
        models = {entry["name"]: entry for entry in health["models"]}
        assert list(models) == ["fast", "slow", "broken"] and health["weights"] == "fast"
        assert models["slow"]["default_steps"] == 3 and models["fast"]["default_steps"] == 2
        assert models["slow"]["family"] == "previs" and models["slow"]["reads_prompt"] is False
        assert models["slow"]["frame_rule"] == "any" and models["slow"]["quantization"] is None
        assert "broken holds no model config" in models["broken"]["error"] and str(tmp_path) not in str(health)
        bundle = bundle_zip(tmp_path, frames=2, width=32, height=24)
        default_job = server.wait_for(server.submit(bundle), finished)
        named_job = server.wait_for(server.submit(bundle, model="slow"), finished)
        for job, name, steps in ((default_job, "fast", 2), (named_job, "slow", 3)):
            assert job["status"] == "done", job["error"]
            assert job["settings"]["model"] == name
            metrics = server.http.get(f"/v1/jobs/{job['id']}/metrics.json").json()["metrics"]
            assert metrics["weights"] == name and metrics["steps"] == steps
        with open(bundle, "rb") as f:
            answer = server.http.post("/v1/jobs", files={"bundle": ("b.zip", f, "application/zip")},
                                      data={"model": "previs-huge"})
        assert answer.status_code == 422 and "no model 'previs-huge'" in answer.text and "fast, slow" in answer.text


def test_the_shipped_catalogue_lists_every_variant(tmp_path):
    """With no model given the server offers every shipped folder, the default first, quantized ones with bits."""
    with LiveServer(Settings(data_dir=tmp_path / "data"), DepthClip()) as server:
        models = {entry["name"]: entry for entry in server.http.get("/v1/health").json()["models"]}
    assert next(iter(models)) == "previs-tiny" and {"previs-tiny-vq3", "previs-tiny-vq2"} <= set(models)
    assert models["previs-tiny-vq3"]["quantization"]["bits"] == 3 and models["previs-tiny"]["quantization"] is None


# ----------------------------------------------------------------------------------------------------------------
# Bad inputs: each gets its 4xx with a message naming the problem, and the server keeps serving
# ----------------------------------------------------------------------------------------------------------------

TOKEN = "s3cret-token-for-the-tests"


def _edit_shot_json(folder: Path, edit) -> None:
    shot = json.loads((folder / "shot.json").read_text())
    edit(shot)
    (folder / "shot.json").write_text(json.dumps(shot))


def _zip_with(entries: dict[str, bytes], base: Path, symlink: str | None = None) -> bytes:
    """The ``base`` folder zipped as it is (valid or not), plus raw extra entries; ``symlink`` adds a link entry."""
    out = base.with_name(base.name + "_raw.zip")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(base.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(base).as_posix())
        for name, data in entries.items():
            archive.writestr(name, data)
        if symlink:
            link = zipfile.ZipInfo(symlink)
            link.external_attr = (0o120777 << 16) | 0x10
            archive.writestr(link, "/etc/passwd")
    return out.read_bytes()


def _nan_depth(folder: Path) -> None:
    frame = folder / "frames" / "000001.npz"
    arrays = dict(np.load(frame))
    arrays["depth"][5, 5] = np.nan
    np.savez_compressed(frame, **arrays)


def _bad_upload(tmp_path: Path, case: str) -> tuple[str, dict]:
    """(method and path, httpx keyword arguments) for one bad request."""
    folder = bundle_folder(tmp_path, case)
    if case == "wrong_schema_version":
        _edit_shot_json(folder, lambda shot: shot.update(schema_version=99))
    elif case == "missing_frame_file":
        (folder / "frames" / "000001.npz").unlink()
    elif case == "nan_depth":
        _nan_depth(folder)
    elif case == "missing_shot_json":
        (folder / "shot.json").unlink()
    uploads = {
        "not_a_zip": b"this is a text file, not a zip",
        "corrupt_zip": b"PK\x03\x04" + bytes(range(256)) * 4,
        "traversal_path": _zip_with({"../../escaped.txt": b"x"}, folder),
        "absolute_path": _zip_with({"/tmp/absolute.txt": b"x"}, folder),
        "symlink_in_zip": _zip_with({}, folder, symlink="frames/link.npz"),
        "zip_bomb": _zip_with({"padding.bin": bytes(3 * 2**20)}, folder),
        "too_many_frames": _zip_with({}, bundle_folder(tmp_path, case + "_many", frames=6)),
        "too_large_resolution": _zip_with({}, bundle_folder(tmp_path, case + "_big", width=96, height=54)),
    }
    data = uploads.get(case) or _zip_with({}, folder)
    return "POST /v1/jobs", {"files": {"bundle": ("shot.zip", data, "application/zip")}}


# (case, expected status, words the message must contain)
BAD_INPUTS = [
    ("not_a_zip", 415, "zip"),
    ("corrupt_zip", 422, "zip"),
    ("traversal_path", 422, "bundle zip refused"),
    ("absolute_path", 422, "bundle zip refused"),
    ("symlink_in_zip", 422, "bundle zip refused"),
    ("zip_bomb", 422, "bundle zip refused"),
    ("huge_upload", 413, "at most 262,144 bytes"),
    ("chunked_upload", 411, "content-length"),
    ("wrong_schema_version", 422, "schema_version"),
    ("missing_frame_file", 422, "000001"),
    ("missing_shot_json", 422, "shot.json"),
    ("nan_depth", 422, "depth"),
    ("too_many_frames", 422, "at most 4"),
    ("too_large_resolution", 422, "96x54"),
    ("missing_bundle_field", 422, "bundle: field required"),
    ("bundle_as_text_field", 422, "bundle"),
    ("steps_not_an_integer", 422, "steps"),
    ("steps_out_of_range", 422, "steps must be between 1 and 50"),
    ("negative_seed", 422, "seed"),
    ("unknown_job_id", 404, "no job"),
    ("malformed_job_id", 422, "malformed job id"),
    ("malformed_job_id_delete", 422, "malformed job id"),
    ("missing_token", 401, "needs a token"),
    ("wrong_token", 401, "wrong token"),
    ("not_a_bearer_token", 401, "bearer"),
]


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("guarded")
    settings = Settings(
        data_dir=data,
        token=TOKEN,
        max_upload_bytes=256 * 1024,
        max_extracted_bytes=2 * 2**20,
        max_frames=4,
        max_width=64,
        max_height=64,
        max_steps=50,
    )
    with LiveServer(settings, DepthClip()) as server:
        yield server


@pytest.mark.parametrize(("case", "status", "words"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gets_4xx_with_message_and_server_keeps_serving(guarded_server, tmp_path, case, status, words):
    http = guarded_server.http
    valid = {"bundle": ("shot.zip", bundle_zip(tmp_path, "valid").read_bytes())}
    unknown = "0123456789abcdef0123456789abcdef"
    requests = {
        "huge_upload": (
            "POST",
            "/v1/jobs",
            {"files": {"bundle": ("s.zip", valid["bundle"][1] + bytes(300 * 1024))}},
        ),
        "chunked_upload": ("POST", "/v1/jobs", {"content": iter([b"--x\r\n", b"chunks"])}),
        "missing_bundle_field": ("POST", "/v1/jobs", {"data": {"steps": "4"}, "files": {"other": ("a", b"x")}}),
        "bundle_as_text_field": ("POST", "/v1/jobs", {"data": {"bundle": "shot.zip"}, "files": {"x": ("a", b"y")}}),
        "steps_not_an_integer": (
            "POST",
            "/v1/jobs",
            {"data": {"steps": "many"}, "files": valid},
        ),
        "steps_out_of_range": (
            "POST",
            "/v1/jobs",
            {"data": {"steps": "51"}, "files": valid},
        ),
        "negative_seed": ("POST", "/v1/jobs", {"data": {"seed": "-1"}, "files": valid}),
        "unknown_job_id": ("GET", f"/v1/jobs/{unknown}", {}),
        "malformed_job_id": ("GET", "/v1/jobs/12345", {}),
        "malformed_job_id_delete": ("DELETE", "/v1/jobs/not-a-job", {}),
        "missing_token": ("GET", "/v1/jobs", {}),
        "wrong_token": ("GET", "/v1/health", {"headers": {"Authorization": "Bearer nope"}}),
        "not_a_bearer_token": ("GET", "/v1/health", {"headers": {"Authorization": f"Basic {TOKEN}"}}),
    }
    if case in requests:
        method, path, kwargs = requests[case]
    else:
        route, kwargs = _bad_upload(tmp_path, case)
        method, path = route.split(" ")
    if case == "missing_token":
        answer = httpx.request(method, guarded_server.url + path, timeout=30)
    else:
        answer = http.request(method, path, **kwargs)
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    assert isinstance(detail, str) and words.lower() in detail.lower(), detail
    assert str(guarded_server.settings.data_dir) not in detail  # answers never show server paths

    assert http.get("/v1/health").status_code == 200
    assert http.get("/v1/jobs").json() == []  # nothing half-accepted
    assert not any((guarded_server.settings.data_dir / "incoming").glob("*"))


def test_token_on_the_board_url_becomes_a_cookie(guarded_server):
    with httpx.Client(base_url=guarded_server.url, timeout=30) as browser:
        assert browser.get("/").status_code == 401
        page = browser.get("/", params={"token": TOKEN})
        assert page.status_code == 200 and "CinePreGen board" in page.text
        assert browser.get("/v1/health").status_code == 200  # the cookie now authenticates
        assert browser.get("/", params={"token": "guess"}).status_code == 401


def test_non_loopback_bind_refused_without_token(tmp_path):
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.5"):
        check_bind(host, None)
    check_bind("0.0.0.0", "a-token-of-sixteen-chars")
    with pytest.raises(ValueError, match="at least 16"):
        check_bind("0.0.0.0", "x")
    for host in ("0.0.0.0", "192.168.1.20", "::", "example.org"):
        with pytest.raises(ValueError, match="--token"):
            check_bind(host, None)
    with pytest.raises(ValueError, match="refusing to listen on '0.0.0.0'"):
        with serve_in_thread(create_app(Settings(data_dir=tmp_path)), host="0.0.0.0"):
            pass
    result = subprocess.run(
        [sys.executable, "-m", "backend.cli", "serve", "--host", "0.0.0.0", "--port", "9"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "CINEPREGEN_TOKEN": ""},
    )
    assert result.returncode == 2 and "refusing to listen on '0.0.0.0' without a token" in result.stderr


# ----------------------------------------------------------------------------------------------------------------
# The review board in a real browser
# ----------------------------------------------------------------------------------------------------------------


def _dump_dom(url: str, profile: Path, budget_ms: int | None = None) -> str:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,900", "--dump-dom"]
    if budget_ms:
        command.append(f"--virtual-time-budget={budget_ms}")
    return subprocess.run([*command, url], capture_output=True, text=True, timeout=180).stdout


class TwoStages:
    """A generate function that reports stage "first", waits, then "second" and waits again (until released)."""

    def __init__(self):
        self.to_second, self.to_end = threading.Event(), threading.Event()

    def __call__(self, bundle_dir, out_dir, *, steps, seed, progress, should_cancel, model=None) -> dict:
        for stage, gate, fraction in (("first", self.to_second, 0.1), ("second", self.to_end, 0.5)):
            progress(fraction, stage)
            while not gate.wait(0.02):
                if should_cancel():
                    raise JobCancelled(stage)
        raise JobCancelled("released")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium)")
def test_review_board_follows_a_running_job_without_reloading(tmp_path):
    """The page is rendered while the job is at stage "first"; on the page's second poll of /v1/jobs the job moves
    on to "second" (the poll is answered once it has). The dumped DOM keeps the stage rendered by the server and
    shows the new one filled in by the page's script: the update happened in place."""
    stages = TwoStages()
    settings = Settings(data_dir=tmp_path / "data")
    app = create_app(settings, stages)
    polls = []

    class CountPolls:
        def __init__(self, inner):
            self.inner = inner

        async def __call__(self, scope, receive, send):
            if scope["type"] == "http" and scope["path"] == "/v1/jobs" and scope["method"] == "GET":
                polls.append(time.monotonic())
                if len(polls) == 2:
                    stages.to_second.set()
                    while app.state.store.list()[0]["stage"] != "second":
                        await asyncio.sleep(0.01)
            await self.inner(scope, receive, send)

    app.add_middleware(CountPolls)
    with serve_in_thread(app) as url:
        job_id = httpx.post(url + "/v1/jobs", files={"bundle": ("s.zip", bundle_zip(tmp_path).read_bytes())},
                            timeout=30).json()["id"]
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/v1/jobs/{job_id}", timeout=30).json()["stage"] != "first":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        polls.clear()
        dom = _dump_dom(url + "/", tmp_path / "chromium", budget_ms=10000)
        stages.to_end.set()
    assert len(polls) >= 3, polls
    assert 'data-rendered-stage="first"' in dom
    row = dom[dom.index(f'id="job-{job_id}"'):]
    assert '<span class="stage">second</span>' in row[:3000]


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium)")
def test_api_docs_render_offline(tmp_path):
    """/docs uses Swagger UI's assets served by this server (no CDN): the rendered page lists the API's routes."""
    with LiveServer(Settings(data_dir=tmp_path / "data"), DepthClip()) as server:
        page = server.http.get("/docs").text
        assert "/docs-assets/swagger-ui-bundle.js" in page and "cdn" not in page.lower()
        assert server.http.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
        dom = _dump_dom(server.url + "/docs", tmp_path / "chromium", budget_ms=10000)
    assert "/v1/jobs/{job_id}/retry" in dom and "CinePreGen backend API" in dom


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium)")
def test_review_board_in_headless_chromium(tmp_path):
    with LiveServer(Settings(data_dir=tmp_path / "data"), DepthClip()) as server:
        job_id = server.submit(bundle_zip(tmp_path, frames=3, name="crane_establishing"))
        assert server.wait_for(job_id, finished)["status"] == "done"
        again = server.http.post(f"/v1/jobs/{job_id}/retry").json()  # a second take of the same shot
        assert server.wait_for(again["id"], finished)["status"] == "done"
        dom = _dump_dom(server.url + "/", tmp_path / "chromium")
    assert f'<tr id="job-{job_id}" class="job status-done"' in dom and "take 1 of 2" in dom and "take 2 of 2" in dom
    assert dom.count('<tbody class="shot-group">') == 1  # both takes under one shot
    assert f'<video id="clip-{job_id}" src="/v1/jobs/{job_id}/result.mp4"' in dom
    assert "crane_establishing" in dom and f'src="/v1/jobs/{job_id}/previews/depth.png"' in dom
    assert "mean depth" in dom and "generation (s)" in dom and "a crate in a yard" in dom  # readable figures, prompt


# ----------------------------------------------------------------------------------------------------------------
# One server per data folder, and startup that survives damaged state
# ----------------------------------------------------------------------------------------------------------------


def _serve_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "backend.cli", "serve", "--port", "0", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_a_second_server_on_the_same_data_folder_is_refused(tmp_path):
    with LiveServer(Settings(data_dir=tmp_path / "data"), DepthClip()):
        with pytest.raises(DataFolderBusy, match="already uses the data folder"):
            create_app(Settings(data_dir=tmp_path / "data"), DepthClip())
        result = _serve_cli("--data", str(tmp_path / "data"))
        assert result.returncode == 2 and "already uses the data folder" in result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    with LiveServer(Settings(data_dir=tmp_path / "data"), DepthClip()):  # released when the first one stopped
        pass


def test_restart_survives_a_corrupt_metrics_file_of_a_running_job(tmp_path):
    data = tmp_path / "data"
    with LiveServer(Settings(data_dir=data), DepthClip()) as server:
        done = server.wait_for(server.submit(bundle_zip(tmp_path, "a")), finished)["id"]
    store = sqlite3.connect(data / "jobs.sqlite")
    store.execute("UPDATE jobs SET status = 'running' WHERE id = ?", (done,))  # as if the server died writing it
    store.commit()
    store.close()
    (data / "jobs" / done / "result" / "metrics.json").write_text("{not json")
    with LiveServer(Settings(data_dir=data), DepthClip()) as server:
        job = server.http.get(f"/v1/jobs/{done}").json()
        assert job["status"] == "failed" and "metrics.json cannot be read" in job["error"]
        assert server.http.get("/").status_code == 200


def test_restart_with_an_emptied_database_lists_the_job_folders_again(tmp_path):
    data = tmp_path / "data"
    with LiveServer(Settings(data_dir=data), DepthClip()) as server:
        done = server.wait_for(server.submit(bundle_zip(tmp_path, "a", name="kept_shot")), finished)["id"]
    for suffix in ("", "-wal", "-shm"):
        path = data / f"jobs.sqlite{suffix}"
        if path.exists():
            path.write_bytes(b"") if suffix == "" else path.unlink()
    with LiveServer(Settings(data_dir=data), DepthClip()) as server:
        (job,) = server.http.get("/v1/jobs").json()
        assert job["id"] == done and job["status"] == "done" and job["name"] == "kept_shot"
        assert server.http.get(f"/v1/jobs/{done}/result.mp4").status_code == 200  # nothing lost


def test_a_job_folder_whose_shot_name_no_database_can_store_does_not_stop_the_start(tmp_path):
    data = tmp_path / "data"
    with LiveServer(Settings(data_dir=data), DepthClip()) as server:
        done = server.wait_for(server.submit(bundle_zip(tmp_path, "a")), finished)["id"]
    orphan = data / "jobs" / ("ef" * 16)
    shutil.copytree(data / "jobs" / done, orphan)  # a folder the database does not list, as a crash could leave
    _edit_shot_json(orphan / "bundle", lambda doc: doc.update(name="shot\ud800"))
    with LiveServer(Settings(data_dir=data), DepthClip()) as server:
        listed = {job["id"]: job for job in server.http.get("/v1/jobs").json()}
        assert listed[orphan.name]["name"] == orphan.name and listed[orphan.name]["status"] == "done"
        assert server.http.get("/").status_code == 200


def test_retry_and_delete_of_one_job_at_the_same_time_never_half_copy_it(tmp_path):
    with LiveServer(Settings(data_dir=tmp_path / "data"), DepthClip()) as server:
        for round_ in range(4):
            done = server.wait_for(server.submit(bundle_zip(tmp_path, f"r{round_}")), finished)["id"]
            with ThreadPoolExecutor(2) as pool:
                retry = pool.submit(server.http.post, f"/v1/jobs/{done}/retry")
                delete = pool.submit(server.http.delete, f"/v1/jobs/{done}", params={"files": "true"})
            assert delete.result().status_code == 200, delete.result().text
            answer = retry.result()
            assert answer.status_code in (201, 404, 410), answer.text  # before the delete, or after it
            if answer.status_code == 201:
                job = server.wait_for(answer.json()["id"], finished)
                assert job["status"] == "done", job  # its own whole copy of the bundle


def test_a_damaged_database_is_one_line_with_the_path_and_what_to_do(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "jobs.sqlite").write_bytes(b"this is not a database" * 100)
    result = _serve_cli("--data", str(tmp_path / "data"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "is damaged" in result.stderr and "jobs.sqlite" in result.stderr and "move it away" in result.stderr


def test_deleted_job_files_fail_the_job_at_the_next_start(tmp_path):
    data = tmp_path / "data"
    with LiveServer(Settings(data_dir=data), DepthClip()) as server:
        done = server.wait_for(server.submit(bundle_zip(tmp_path, "a")), finished)["id"]
    shutil.rmtree(data / "jobs" / done)
    with LiveServer(Settings(data_dir=data), DepthClip()) as server:
        job = server.http.get(f"/v1/jobs/{done}").json()
        assert job["status"] == "failed" and "deleted" in job["error"]


def test_retention_and_delete_with_files(tmp_path):
    data = tmp_path / "data"
    with LiveServer(Settings(data_dir=data), DepthClip()) as server:
        old = server.wait_for(server.submit(bundle_zip(tmp_path, "a")), finished)["id"]
        kept = server.wait_for(server.submit(bundle_zip(tmp_path, "b")), finished)["id"]
        gone = server.wait_for(server.submit(bundle_zip(tmp_path, "c")), finished)["id"]
        answer = server.http.delete(f"/v1/jobs/{gone}", params={"files": "true"})
        assert answer.status_code == 200 and answer.json() == {"id": gone, "deleted": True}
        assert not (data / "jobs" / gone).exists() and server.http.get(f"/v1/jobs/{gone}").status_code == 404
    store = sqlite3.connect(data / "jobs.sqlite")
    store.execute("UPDATE jobs SET finished = finished - 3 * 86400 WHERE id = ?", (old,))
    store.commit()
    store.close()
    with LiveServer(Settings(data_dir=data, keep_days=2), DepthClip()) as server:
        assert [job["id"] for job in server.http.get("/v1/jobs").json()] == [kept]
    assert not (data / "jobs" / old).exists() and (data / "jobs" / kept / "result").is_dir()


def test_cancel_while_the_result_is_written_ends_cancelled(tmp_path):
    class CancelledWhileWriting(DepthClip):
        def __call__(self, bundle_dir, out_dir, **kwargs):
            result = super().__call__(bundle_dir, out_dir, **kwargs)
            self.server.http.delete(f"/v1/jobs/{Path(out_dir).parent.name}")  # the user cancels at the very end
            return result

    generate = CancelledWhileWriting()
    with LiveServer(Settings(data_dir=tmp_path / "data"), generate) as server:
        generate.server = server
        job = server.wait_for(server.submit(bundle_zip(tmp_path, "a")), finished)
        assert job["status"] == "cancelled"
        assert not (tmp_path / "data" / "jobs" / job["id"] / "result").exists()
        assert not (tmp_path / "data" / "jobs" / job["id"] / "result.partial").exists()


def test_the_token_never_reaches_the_access_log(tmp_path, caplog):
    """uvicorn's access log line for a board opened as /?token=... (its own format and arguments) is redacted."""
    import logging

    create_app(Settings(data_dir=tmp_path / "data", token=TOKEN), DepthClip())  # installs the filter
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET",
                                                 f"/?token={TOKEN}&x=1", "1.1", 200)
    (record,) = caplog.records
    assert TOKEN not in record.getMessage() and "token=<redacted>&x=1" in record.getMessage()


def _raw_request(url: str, head: str, body: bytes, wait: float) -> tuple[bytes, float]:
    """Send a request's head and the start of its body on a raw socket, then nothing: what the server answers,
    and after how long."""
    import socket
    from urllib.parse import urlsplit

    address = urlsplit(url)
    with socket.create_connection((address.hostname, address.port), timeout=wait) as sock:
        sock.sendall(head.encode() + body)
        started, answer = time.monotonic(), b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except TimeoutError:
            pass
        return answer, time.monotonic() - started


def test_an_upload_that_stalls_is_answered_408_and_its_connection_closed(tmp_path):
    """A client that drops off mid-upload (or trickles) does not hold a connection for good: after the stall time
    without a byte it gets 408 and the server closes the connection; the server goes on serving, with nothing
    queued. A refused request (wrong token) whose body stalls gets its 401 and the connection closed as well."""
    settings = Settings(data_dir=tmp_path / "data", token=TOKEN, upload_stall_seconds=1.0)
    with LiveServer(settings, DepthClip()) as server:
        multipart = (b"--b\r\nContent-Disposition: form-data; name=\"bundle\"; filename=\"a.zip\"\r\n"
                     b"Content-Type: application/zip\r\n\r\nPK\x03\x04")
        head = (f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n")
        answer, seconds = _raw_request(server.url, head, multipart, wait=20)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"stalled" in answer and b"connection: close" in answer.lower()
        assert seconds < 10  # closed by the server, not by the test's own timeout
        refused_head = head.replace(TOKEN, "w" * len(TOKEN))
        answer, seconds = _raw_request(server.url, refused_head, multipart, wait=20)
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        assert b"connection: close" in answer.lower() and seconds < 10
        assert server.http.get("/v1/jobs").json() == []
