"""The add-on's standard-library client against a live backend on 127.0.0.1, and against backends that are down
or silent: every failure is a ``BackendError`` with a clear message, never a hang or a raw traceback."""

from __future__ import annotations

import ast
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_server import TOKEN, DepthClip, LiveServer, bundle_zip, read_mp4

from backend.server import measure_status_rps
from backend.server.app import Settings
from cinepregen_addon.core import backend_client
from cinepregen_addon.core.backend_client import BackendClient, BackendError

REPO = Path(__file__).resolve().parents[1]


def test_client_uses_the_standard_library_only():
    """Blender's Python has no extra packages: every import of the client must be in the standard library."""
    tree = ast.parse(open(backend_client.__file__).read())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported - {"__future__"} <= sys.stdlib_module_names, imported - sys.stdlib_module_names


def test_client_against_a_live_backend(tmp_path):
    generate = DepthClip(hold_at=1)
    with LiveServer(Settings(data_dir=tmp_path / "data", token=TOKEN), generate) as server:
        client = BackendClient(server.url + "/", token=TOKEN)
        health = client.health()
        assert health["status"] == "ok" and health["device"] == "cpu" and health["queue_length"] == 0
        assert health["auth"] is True and {"model", "weights", "quantization"} <= health.keys()

        job_id = client.submit(bundle_zip(tmp_path, frames=3), {"steps": 3, "seed": 5, "unused": None})
        running = server.wait_for(job_id, lambda j: j["status"] == "running" and j["progress"] > 0)
        expected = {"steps": 3, "seed": 5, "model": "previs-tiny"}  # the job records the model that serves it
        assert client.status(job_id)["settings"] == expected == running["settings"]
        assert [job["id"] for job in client.list_jobs()] == [job_id]
        with pytest.raises(BackendError, match="result is not ready") as refused:
            client.download(job_id, tmp_path / "early")
        assert refused.value.status == 409 and not (tmp_path / "early" / "result.mp4").exists()

        # the status endpoint keeps answering while the model works (the figure reported with the service)
        assert measure_status_rps(server.url, job_id, 0.3, token=TOKEN) > 0
        generate.release()
        job = client.wait(job_id, timeout=60, poll_interval=0.05)
        assert job["status"] == "done"
        mp4, metrics = client.download(job_id, tmp_path / "shot_a")
        assert mp4.name == "result.mp4" and len(read_mp4(mp4)) == 3
        assert json.loads(metrics.read_text())["metrics"]["frames"] == 3
        assert sorted(p.name for p in (tmp_path / "shot_a").iterdir()) == ["metrics.json", "result.mp4"]

        with pytest.raises(BackendError, match="already done") as already:
            client.cancel(job_id)
        assert already.value.status == 409
        with pytest.raises(BackendError, match="no job 0{32}") as unknown:
            client.status("0" * 32)
        assert unknown.value.status == 404
        with pytest.raises(BackendError, match="HTTP 401: wrong token"):
            BackendClient(server.url, token="not-it").health()
        with pytest.raises(BackendError, match="needs a token"):
            BackendClient(server.url).list_jobs()
        with pytest.raises(BackendError, match="steps must be between 1 and 500"):
            client.submit(bundle_zip(tmp_path, "again"), {"steps": 9999})
        with pytest.raises(BackendError, match="cannot read the shot bundle"):
            client.submit(tmp_path / "missing.zip")

        generate.gate.clear()
        cancelled_id = client.submit(bundle_zip(tmp_path, "cancel"))
        assert client.cancel(cancelled_id)["status"] in ("cancelled", "running")
        assert client.wait(cancelled_id, timeout=60, poll_interval=0.05)["status"] == "cancelled"


def test_client_against_cinepregen_serve(tmp_path):
    """The real command: ``cinepregen serve`` in its own process, with a token, answers the client; Ctrl-C stops it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "backend.cli", "serve", "--port", str(port), "--data", str(tmp_path / "data")]
    process = subprocess.Popen([*command, "--token", TOKEN, "--log-level", "warning"], cwd=REPO)
    try:
        client = BackendClient(f"http://127.0.0.1:{port}", token=TOKEN)
        deadline = time.monotonic() + 120
        while True:
            try:
                health = client.health()
                break
            except BackendError as error:
                assert "connection refused" in str(error) and process.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        assert health["queue_length"] == 0 and health["auth"] is True and health["model"]
        assert client.list_jobs() == [] and (tmp_path / "data" / "jobs.sqlite").is_file()
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0


def test_client_against_a_dead_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = BackendClient(f"http://127.0.0.1:{port}", timeout=2.0)
    with pytest.raises(BackendError, match=f"no backend running at http://127.0.0.1:{port}"):
        client.health()
    with pytest.raises(BackendError, match="connection refused") as refused:
        client.status("0" * 32)
    assert refused.value.status is None


def test_client_against_a_backend_that_never_answers():
    """A port that accepts connections but never replies (a hung server) gives a timeout, not a hang."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        client = BackendClient(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.3)
        with pytest.raises(BackendError, match=r"no answer within 0.3s"):
            client.health()


def test_client_rejects_urls_that_are_not_http():
    for url in ("127.0.0.1:8765", "ftp://127.0.0.1", "http://", ""):
        with pytest.raises(ValueError, match="backend URL"):
            BackendClient(url)
