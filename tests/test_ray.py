"""Shots on a local Ray cluster (started by the tests, loopback only): the same frames as in process, a worker
killed mid-board, a shot that fails alone, and the server on Ray through a restart with jobs queued."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import bpy
import numpy as np
import pytest
from PIL import Image
from test_server import LiveServer

from backend.blender.addon import enable_addon_in_process
from backend.blender.scenes import build_test_scene
from backend.cli import main as cli_main
from backend.distributed.ray_pool import RayShotPool
from backend.models.previs_dit import PrevisDiT
from backend.models.reference_encoder import ReferenceEncoder
from backend.pipelines.previs_pipeline import PrevisPipeline
from backend.server.app import Settings
from backend.server.jobs import JobStore

SHOTS = ("Shot A", "Shot B", "Shot C")
FRAMES = 3


def frames_of(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted((folder / "frames").glob("*.png"))])


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """A saved 3-shot board, tiny real weights, and the board rendered and generated in process."""
    enable_addon_in_process()
    tmp = tmp_path_factory.mktemp("ray")
    info = build_test_scene(n_objects=2, moving=True, frame_end=3 * FRAMES)
    scene = info["scene"]
    scene.cinepregen.pass_resolution = (64, 36)
    for i, name in enumerate(SHOTS):
        shot = scene.cinepregen.shots.add()
        shot.name, shot.camera, shot.seed = name, bpy.data.objects[info["camera"]], 3 + i
        shot.frame_start, shot.frame_end = 1 + i * FRAMES, (i + 1) * FRAMES
    blend = tmp / "board.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    encoder = ReferenceEncoder(reference_dim=32, width=16, num_heads=2)
    weights = PrevisPipeline(PrevisDiT.from_preset("tiny-test"), encoder).save_pretrained(tmp / "weights")
    here = tmp / "here"
    assert cli_main(["render", str(blend), "--out", str(here), "--weights", str(weights), "--steps", "2"]) == 0
    return {"blend": blend, "weights": weights, "here": here, "tmp": tmp}


def test_a_board_on_two_ray_workers_gives_the_in_process_frames(board):
    out = board["tmp"] / "on_ray"
    assert cli_main(["render", str(board["blend"]), "--out", str(out), "--weights", str(board["weights"]),
                     "--steps", "2", "--ray", "local", "--workers", "2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "ray local (2 workers)"
    workers = set()
    for record in summary["shots"]:
        folder = record["name"].replace(" ", "_")
        assert "error" not in record and Path(record["mp4"]).is_file()
        np.testing.assert_array_equal(frames_of(out / "work" / folder), frames_of(board["here"] / "work" / folder))
        workers.add(record["metrics"]["worker"]["pid"])
        assert record["metrics"]["worker"]["pid"] != os.getpid()
    assert len(workers) == 2  # three shots on two workers: both worked


def test_a_worker_killed_mid_board_and_a_broken_shot(board):
    bundles = [board["here"] / "bundles" / name.replace(" ", "_") for name in SHOTS]
    broken = board["tmp"] / "broken"
    broken.mkdir()
    (broken / "shot.json").write_text("{}")  # not a bundle: fails in the worker, alone
    pool = RayShotPool("local", workers=2, weights=board["weights"])
    try:
        victim = pool.where()[0]["pid"]
        # every key up front: the threads only append to their list, so the loop below never iterates a dict
        # that another thread grows ("dictionary changed size during iteration")
        stages: dict[str, list[tuple[float, str]]] = {b.name: [] for b in [*bundles, broken]}
        results: dict[str, dict | Exception] = {}

        def run(bundle: Path) -> None:
            try:
                results[bundle.name] = pool.generate(
                    bundle, board["tmp"] / "faults" / bundle.name, steps=1500,
                    progress=lambda fraction, stage: stages[bundle.name].append((fraction, stage)))
            except Exception as error:
                results[bundle.name] = error

        threads = [threading.Thread(target=run, args=(b,)) for b in [*bundles, broken]]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        # Kill while both workers are early in a shot: last reported stage "denoise" at under 60%, so neither can
        # finish (and then write, still not in `results`) between this check and the kill.
        while sum(bool(s) and s[-1][1] == "denoise" and s[-1][0] < 0.6 for s in stages.values()) < 2:
            assert time.monotonic() < deadline, stages
            time.sleep(0.05)
        finished_before_kill = set(results)  # the victim may have finished a shot before it died: that one is its
        os.kill(victim, signal.SIGKILL)
        for thread in threads:
            thread.join(300)
    finally:
        pool.shutdown()
    assert isinstance(results["broken"], RuntimeError), results["broken"]
    reason = str(results["broken"])
    assert reason.startswith("BundleError: invalid shot bundle") and "schema_version: unsupported" in reason
    retried = [name for name, s in stages.items() if any(stage.startswith("worker lost") for _, stage in s)]
    assert len(retried) == 1, stages
    for bundle in bundles:
        result = results[bundle.name]
        assert isinstance(result, dict), result
        assert len(frames_of(Path(result["frames_dir"]).parent)) == FRAMES
        if bundle.name not in finished_before_kill:
            assert result["metrics"]["worker"]["pid"] != victim
    assert results[retried[0]]["metrics"]["worker"]["pid"] != victim  # the shot the kill cut off ran again elsewhere


def test_the_server_on_ray_keeps_queued_jobs_through_a_restart(board):
    from cinepregen_addon.core.shot_bundle import zip_bundle

    settings = Settings(data_dir=board["tmp"] / "server", weights=board["weights"], ray="local", ray_workers=1)
    zips = [zip_bundle(board["here"] / "bundles" / n.replace(" ", "_"), board["tmp"] / f"{n}.zip") for n in SHOTS]
    with LiveServer(settings, None) as server:
        ids = [server.submit(z, steps="400") for z in zips]
        server.wait_for(ids[0], lambda job: job["status"] == "running" and job["progress"] > 0.1, timeout=120)
        assert server.http.get(f"/v1/jobs/{ids[2]}").json()["status"] == "queued"
    store = JobStore(settings.data_dir / "jobs.sqlite")
    try:  # nothing lost: the job running at the stop went back to the queue (or had just finished), no half result
        statuses = [store.get(i)["status"] for i in ids]
        assert set(statuses) <= {"queued", "done"} and statuses[2] == "queued", statuses
        assert not any((settings.data_dir / "jobs" / i / "result.partial").exists() for i in ids)
    finally:
        store.close()
    with LiveServer(settings, None) as server:
        jobs = [server.wait_for(i, lambda job: job["status"] == "done", timeout=300) for i in ids]
        assert jobs[0]["attempts"] == 1  # a clean stop is not counted as an attempt
        clip = server.http.get(f"/v1/jobs/{ids[1]}/result.mp4")
        assert clip.status_code == 200 and len(clip.content) > 1000


def test_bench_ray_prints_the_board_in_process_and_on_the_cluster(board, capsys):
    assert cli_main(["bench", "ray", "--bundles", str(board["here"] / "bundles"), "--workers", "1",
                     "--weights", str(board["weights"]), "--steps", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{len(SHOTS)} shots, 1 steps, this machine: {os.cpu_count()} CPUs")
    assert lines[1].startswith("in process, one after another: ")
    assert lines[2].startswith("ray local, 1 worker(s): ") and "x the in-process speed" in lines[2]
