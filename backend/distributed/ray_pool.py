"""Shots generated on a Ray cluster: a pool of long-lived actors, one per device, each holding its model loaded.

``RayShotPool.generate`` writes a shot as ``generate_shot`` does (the same ``write_shot``), so the batch command runs
it on a thread per worker and the server's queue feeds it (``job_fn``) from one worker thread per actor. What crosses
the cluster: the shot bundle as zip bytes going out (workers need no shared disk for bundles), the frames (uint8) and
metrics coming back; the model folder is read by each worker at its own path, so it must be at the same path on
every machine (shared storage or a copy).

Faults: a worker process that dies mid-shot (killed, out of memory, its machine gone) is restarted by Ray
(``max_restarts``) while the shot goes to the next free worker, up to ``MAX_ATTEMPTS`` times; a shot whose model
raises fails alone with that reason. Progress: each actor answers ``progress_of`` on a second thread while it
generates, and the caller forwards it to its progress callback; cancelling is a flag the actor's step callback reads.
"""

from __future__ import annotations

import io
import os
import queue
import socket
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

MAX_ATTEMPTS = 3  # a shot is tried on at most this many workers when workers die under it
POLL_S = 0.25
WORKER_WAIT_S = 900.0  # longest wait for a free worker before a shot gives up (only dead workers make it wait)


class WorkerLost(RuntimeError):
    """Every attempt of a shot ended with its worker process gone."""


def _zip_bundle(bundle_path: Path) -> bytes:
    """A bundle folder (or zip) as zip bytes."""
    bundle_path = Path(bundle_path)
    if bundle_path.is_file():
        return bundle_path.read_bytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(bundle_path.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(bundle_path).as_posix())
    return buffer.getvalue()


class ShotWorker:
    """The actor: generates shots on its device with the model kept loaded between them (``load_model``)."""

    def __init__(self, device: str, threads: int):
        import torch

        self.device = device
        torch.set_num_threads(max(1, threads))
        self.progress: dict[str, tuple[float, str]] = {}
        self.cancelled: set[str] = set()

    def where(self) -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "device": self.device}

    def generate(self, job_id: str, bundle_zip: bytes, weights: str | None, steps: int | None,
                 seed: int | None) -> dict:
        from backend.pipelines.generate import generate_frames

        if weights is not None and not Path(weights).is_dir():
            raise FileNotFoundError(f"the model folder {weights} is not on worker host {socket.gethostname()}: put "
                                    "it at the same path on every machine of the cluster (shared storage or a copy)")
        with tempfile.TemporaryDirectory(prefix="cinepregen-ray-") as tmp:
            bundle = Path(tmp) / "bundle.zip"
            bundle.write_bytes(bundle_zip)
            frames, metrics, timings = generate_frames(
                bundle, weights=weights, steps=steps, seed=seed, device=self.device,
                progress=lambda fraction, stage: self.progress.__setitem__(job_id, (fraction, stage)),
                should_cancel=lambda: job_id in self.cancelled)
        self.progress.pop(job_id, None)
        self.cancelled.discard(job_id)
        return {"frames": frames, "metrics": {**metrics, "worker": self.where()}, "timings": timings}

    def progress_of(self, job_id: str) -> tuple[float, str] | None:
        return self.progress.get(job_id)

    def cancel(self, job_id: str) -> None:
        self.cancelled.add(job_id)


class RayShotPool:
    """A pool of ``ShotWorker`` actors on a Ray cluster.

    ``address`` "local" starts a cluster on this machine (loopback only) with ``workers`` CPUs, one per actor;
    anything else is a running cluster's address (``ray start --head`` printed it; "auto" finds the local one).
    ``workers`` defaults to the cluster's GPUs on a CUDA device, else 1. On CUDA each actor claims one GPU."""

    def __init__(self, address: str, workers: int | None = None, device: str = "cpu", weights: str | None = None):
        import ray

        self.ray = ray
        self.weights = str(Path(weights).resolve()) if weights is not None else None
        gpu = device.startswith("cuda")
        if address == "local":
            workers = workers or 1
            ray.init(num_cpus=workers, num_gpus=None if gpu else 0, include_dashboard=False,
                     _node_ip_address="127.0.0.1", object_store_memory=256 * 2**20, log_to_driver=False,
                     configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get("GPU", 0))) if gpu else 1
        cpus = int(ray.cluster_resources().get("CPU", workers))
        actor = ray.remote(ShotWorker).options(
            num_cpus=0 if gpu else 1, num_gpus=1 if gpu else 0, max_restarts=-1, max_concurrency=3)
        self.actors = [actor.remote(device, 1 if gpu else max(1, cpus // workers)) for _ in range(workers)]
        self.idle: queue.Queue = queue.Queue()
        for a in self.actors:
            self.idle.put(a)
        self.workers = workers
        self.closed = threading.Event()

    def where(self) -> list[dict]:
        """Host, pid and device of every worker (waits for them to start)."""
        return self.ray.get([a.where.remote() for a in self.actors])

    def generate(self, bundle_path: Path, out_dir: Path, *, steps: int | None = None, seed: int | None = None,
                 progress: Callable[[float, str], None] | None = None,
                 should_cancel: Callable[[], bool] | None = None, job_id: str | None = None) -> dict:
        """One shot on the next free worker, written to ``out_dir`` as ``generate_shot`` writes it."""
        from backend.pipelines.generate import GenerationCancelled, write_shot

        ray = self.ray
        report = progress or (lambda fraction, stage: None)
        job_id = job_id or f"{Path(bundle_path).name}-{time.monotonic_ns()}"
        bundle_ref = ray.put(_zip_bundle(Path(bundle_path)))
        for attempt in range(1, MAX_ATTEMPTS + 1):
            report(0.0, "waiting for a worker" if attempt == 1 else f"worker lost: retrying (attempt {attempt})")
            try:
                actor = self.idle.get(timeout=WORKER_WAIT_S)  # every worker is busy with one shot, or restarting
            except queue.Empty:
                raise WorkerLost(f"no worker of the cluster answered for {WORKER_WAIT_S:g} s") from None
            lost = False
            try:
                result = self._run_on(actor, job_id, bundle_ref, steps, seed, report, should_cancel)
            except ray.exceptions.RayActorError:
                # its process died: Ray restarts it and it rejoins the pool once it answers; the shot goes to the
                # next free worker
                lost = True
                threading.Thread(target=self._rejoin_when_alive, args=(actor,), daemon=True).start()
                continue
            except ray.exceptions.RayTaskError as error:
                cause = getattr(error, "cause", None) or error
                if isinstance(cause, GenerationCancelled):
                    raise GenerationCancelled(str(cause).splitlines()[0]) from None
                raise RuntimeError(_one_line(cause)) from None
            finally:
                if not lost:
                    self.idle.put(actor)
            report(0.9, "write")
            written = write_shot(result["frames"], out_dir, result["metrics"], result["timings"])
            report(1.0, "done")
            return written
        raise WorkerLost(f"the worker died under this shot {MAX_ATTEMPTS} times; giving up")

    def _run_on(self, actor, job_id: str, bundle_ref, steps, seed, report, should_cancel) -> dict:
        ray = self.ray
        future = actor.generate.remote(job_id, bundle_ref, self.weights, steps, seed)
        cancel_sent = False
        while True:
            done, _ = ray.wait([future], timeout=POLL_S)
            if done:
                return ray.get(future)
            if should_cancel is not None and not cancel_sent and should_cancel():
                actor.cancel.remote(job_id)
                cancel_sent = True
            try:
                state = ray.get(actor.progress_of.remote(job_id), timeout=5)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                state = None  # a dying or busy worker: the generate future says what happened
            if state is not None:
                report(*state)

    def _rejoin_when_alive(self, actor, patience_s: float = 600.0) -> None:
        ray = self.ray
        deadline = time.monotonic() + patience_s
        while time.monotonic() < deadline and not self.closed.is_set():
            try:
                ray.get(actor.where.remote(), timeout=30)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                self.closed.wait(1.0)
                continue
            except Exception:  # the pool was shut down under it
                if self.closed.is_set():
                    return
                raise
            self.idle.put(actor)
            return

    def job_fn(self, model_name: str) -> Callable[..., dict]:
        """The server's generate function on this pool (``backend.server.jobs.Worker``): the job's folder names it,
        and a job may only ask for the one model the pool serves."""

        def generate(bundle_dir: Path, out_dir: Path, *, model: str | None = None, **kwargs: Any) -> dict:
            if model is not None and model != model_name:
                raise ValueError(f"model {model!r} is not served here (this server runs {model_name} on Ray)")
            return self.generate(bundle_dir, out_dir, job_id=Path(out_dir).parent.name, **kwargs)

        return generate

    def shutdown(self) -> None:
        self.closed.set()
        for a in self.actors:
            self.ray.kill(a)
        self.ray.shutdown()


def _one_line(error: BaseException) -> str:
    """The worker's error as one line (a message over several lines joined), as the job's reason."""
    text = "; ".join(line.strip() for line in str(error).splitlines() if line.strip()) or "no message"
    return f"{type(error).__name__}: {text[:500]}"
