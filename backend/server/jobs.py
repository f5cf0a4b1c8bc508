"""The job queue behind ``cinepregen serve``: an SQLite (WAL) store and one worker thread.

Jobs survive restarts: the store is the single source of truth, each job's files live under
``data/jobs/<id>/``, and a result becomes visible only when its folder is renamed from ``result.partial`` to
``result``. On startup, a job found ``running`` (the server died mid-job) goes back to the queue until it has been
tried ``max_attempts`` times; then it fails with the reason. One worker runs the model, so one job at a time.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cinepregen_addon.core import bundle_checks

logger = logging.getLogger(__name__)

STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    stage TEXT NOT NULL DEFAULT '',
    progress REAL NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    settings TEXT NOT NULL DEFAULT '{}',
    info TEXT NOT NULL DEFAULT '{}',
    timings TEXT NOT NULL DEFAULT '{}',
    error TEXT
)
"""
_JSON_COLUMNS = ("settings", "info", "timings")
_JOB_FOLDER = re.compile(r"[0-9a-f]{32}")


PRUNE_EVERY_S = 600.0


class GenerationStopped(Exception):
    pass


def delete_job_files(jobs_dir: Path, job_id: str) -> None:
    """Remove a job's folder; the id is checked, so nothing outside ``jobs_dir`` can be named."""
    if not _JOB_FOLDER.fullmatch(job_id):
        raise ValueError(f"malformed job id {job_id[:64]!r}")
    shutil.rmtree(jobs_dir / job_id, ignore_errors=True)


def _bundle_name(bundle_dir: Path) -> str | None:
    """The shot name in a job folder's bundle, when it is one a job may carry (checked as a bundle's is)."""
    try:
        name = json.loads((bundle_dir / "shot.json").read_text()).get("name")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    return None if bundle_checks.text_problem(name, bundle_checks.MAX_NAME_LENGTH) else name

GenerateFn = Callable[..., dict]


class DamagedDatabase(Exception):
    """The job database cannot be opened; the message names the file and what to do."""


class JobStore:
    """Jobs in one SQLite file in WAL mode; every change is one atomic statement, so the API and the worker
    never race on a status (a queued job is either claimed by the worker or cancelled, never both)."""

    def __init__(self, db_path: Path):
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            with self._lock:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute(_SCHEMA)
                self._db.execute("SELECT COUNT(*) FROM jobs").fetchone()
        except sqlite3.DatabaseError as error:
            raise DamagedDatabase(
                f"the job database {db_path} is damaged ({error}); move it away (e.g. rename it to "
                f"{db_path.name}.damaged) and start again: the jobs' folders are kept and listed again") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _execute(self, sql: str, params: tuple = ()) -> int:
        """Run one statement; returns the number of rows it changed."""
        with self._lock:
            return self._db.execute(sql, params).rowcount

    def _scalar(self, sql: str, params: tuple = ()) -> Any:
        with self._lock:
            row = self._db.execute(sql, params).fetchone()
        return row[0] if row else None

    def _fetch(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        jobs = []
        for row in rows:
            job = dict(row)
            for key in _JSON_COLUMNS:
                job[key] = json.loads(job[key])
            job["cancel_requested"] = bool(job["cancel_requested"])
            jobs.append(job)
        return jobs

    def create(self, job_id: str, name: str, settings: dict, info: dict, *, status: str = "queued",
               error: str | None = None, created: float | None = None) -> dict[str, Any]:
        """A new job, queued; or (``status`` another state) a job found on disk that the database lost."""
        finished = time.time() if status in FINISHED else None
        self._execute(
            "INSERT INTO jobs (id, name, status, stage, created, finished, settings, info, error) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job_id, name, status, status, created or time.time(), finished, json.dumps(settings), json.dumps(info),
             error),
        )
        return self.get(job_id)

    def delete(self, job_id: str) -> None:
        self._execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def finished_before(self, when: float) -> list[str]:
        return [row["id"] for row in self._fetch("SELECT * FROM jobs WHERE finished IS NOT NULL AND finished < ? "
                                                 "AND status IN ('done', 'failed', 'cancelled')", (when,))]

    def get(self, job_id: str) -> dict[str, Any] | None:
        jobs = self._fetch("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return jobs[0] if jobs else None

    def list(self) -> list[dict[str, Any]]:
        return self._fetch("SELECT * FROM jobs ORDER BY created DESC")

    def queue_length(self) -> int:
        return self._scalar("SELECT COUNT(*) FROM jobs WHERE status = 'queued'")

    def claim_next(self) -> dict[str, Any] | None:
        """Oldest queued job, now running (attempts counted), or None."""
        while True:
            job_id = self._scalar("SELECT id FROM jobs WHERE status = 'queued' ORDER BY created LIMIT 1")
            if job_id is None:
                return None
            claimed = self._execute(
                "UPDATE jobs SET status = 'running', stage = 'starting', progress = 0, started = ?, "
                "attempts = attempts + 1 WHERE id = ? AND status = 'queued'",
                (time.time(), job_id),
            )
            if claimed:
                return self.get(job_id)

    def set_progress(self, job_id: str, progress: float, stage: str) -> None:
        self._execute(
            "UPDATE jobs SET progress = ?, stage = ? WHERE id = ? AND status = 'running'",
            (min(max(float(progress), 0.0), 1.0), str(stage), job_id),
        )

    def finish(self, job_id: str, status: str, *, error: str | None = None, timings: dict | None = None) -> None:
        if status not in FINISHED:
            raise ValueError(f"a job finishes as one of {FINISHED}, got {status!r}")
        progress_sql = ", progress = 1" if status == "done" else ""
        self._execute(
            f"UPDATE jobs SET status = ?, stage = ?, finished = ?, error = ?, timings = ?{progress_sql} WHERE id = ?",
            (status, status, time.time(), error, json.dumps(timings or {}), job_id),
        )

    def requeue(self, job_id: str, *, count_attempt: bool) -> None:
        """Back to the queue; a clean shutdown does not count as an attempt, a crash does."""
        self._execute(
            "UPDATE jobs SET status = 'queued', stage = 'queued', progress = 0, started = NULL"
            f"{'' if count_attempt else ', attempts = MAX(attempts - 1, 0)'} WHERE id = ?",
            (job_id,),
        )

    def cancel(self, job_id: str) -> dict[str, Any] | None:
        """A queued job is cancelled at once; a running one is asked to stop at its next step."""
        cancelled = self._execute(
            "UPDATE jobs SET status = 'cancelled', stage = 'cancelled', finished = ?, error = 'cancelled by the user' "
            "WHERE id = ? AND status = 'queued'",
            (time.time(), job_id),
        )
        if not cancelled:
            self._execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND status = 'running'", (job_id,))
        return self.get(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self._scalar("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)))


class Worker:
    """The threads that run the model (one in process; one per worker of a Ray pool): each claims the oldest
    queued job, runs ``generate_fn`` into ``result.partial``, then renames it to ``result``.

    ``generate_fn(bundle_dir, out_dir, *, steps, seed, model, progress, should_cancel) -> dict`` (``model``: a
    catalogue name, or None for the default) returns ``mp4``,
    ``frames_dir``, ``metrics`` and ``timings``; whatever it raises after a cancel request counts as cancelled.
    """

    def __init__(self, store: JobStore, jobs_dir: Path, generate_fn: GenerateFn, max_attempts: int = 2,
                 keep_days: float | None = None, threads: int = 1):
        self.store = store
        self.jobs_dir = jobs_dir
        self.generate_fn = generate_fn
        self.max_attempts = max_attempts
        self.keep_days = keep_days
        self._pruned = 0.0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.threads = threads  # jobs run at once: 1 in process, one per worker of a Ray pool
        self._threads: list[threading.Thread] = []

    def recover(self) -> None:
        """Make the store and the job folders agree after any stop: jobs interrupted by a crash go back to the queue
        (or fail once they used all their attempts); a finished job whose folder is gone fails with that reason; a
        folder the database does not list (it was emptied or replaced) is listed again; a half-written result
        of a job not running is removed. A job file that cannot be read fails its job, never the start."""
        known = {job["id"]: job for job in self.store.list()}
        for job in known.values():
            job_dir = self.jobs_dir / job["id"]
            if job["status"] == "running":
                self._recover_running(job, job_dir)
            elif job["status"] == "done" and not (job_dir / "result").is_dir():
                self.store.finish(job["id"], "failed", error="its result files were deleted from the data folder")
            elif job["status"] == "queued" and not (job_dir / "bundle").is_dir():
                self.store.finish(job["id"], "failed", error="its bundle was deleted from the data folder")
            if job["status"] != "running":
                shutil.rmtree(job_dir / "result.partial", ignore_errors=True)
        for job_dir in sorted(self.jobs_dir.glob("*")) if self.jobs_dir.is_dir() else []:
            if job_dir.name in known or not _JOB_FOLDER.fullmatch(job_dir.name) or not job_dir.is_dir():
                continue
            shutil.rmtree(job_dir / "result.partial", ignore_errors=True)
            done = (job_dir / "result" / "metrics.json").is_file()
            name = _bundle_name(job_dir / "bundle") or job_dir.name
            logger.warning("job folder %s was not in the database: listed again as %s", job_dir.name,
                           "done" if done else "failed")
            try:
                self.store.create(job_dir.name, name, {}, {}, status="done" if done else "failed",
                                  error=None if done else "the job database lost this job; its files are kept",
                                  created=job_dir.stat().st_mtime)
            except (sqlite3.Error, OSError, ValueError) as error:  # never the start
                logger.error("job folder %s could not be listed again (%s); left as it is", job_dir.name, error)

    def _recover_running(self, job: dict[str, Any], job_dir: Path) -> None:
        if (job_dir / "result").is_dir():
            try:
                timings = json.loads((job_dir / "result" / "metrics.json").read_text()).get("timings", {})
            except (OSError, ValueError, AttributeError, RecursionError) as error:
                self.store.finish(job["id"], "failed", error=f"its metrics.json cannot be read ({str(error)[:120]})")
                return
            self.store.finish(job["id"], "done", timings=timings if isinstance(timings, dict) else {})
        elif job["cancel_requested"]:
            self.store.finish(job["id"], "cancelled", error="cancelled by the user")
        elif job["attempts"] >= self.max_attempts:
            reason = f"the server stopped during this job {job['attempts']} times; giving up"
            self.store.finish(job["id"], "failed", error=reason)
        else:
            logger.info("re-queueing job %s interrupted mid-run (attempt %d)", job["id"], job["attempts"])
            self.store.requeue(job["id"], count_attempt=True)

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._loop, name=f"cinepregen-worker-{i}", daemon=True)
                         for i in range(self.threads)]
        for thread in self._threads:
            thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the running job to stop at its next step and put it back in the queue for the next start."""
        self._stopping.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def prune(self) -> list[str]:
        """Delete finished jobs (rows and files) older than ``keep_days``; returns their ids."""
        self._pruned = time.time()
        if self.keep_days is None:
            return []
        old = self.store.finished_before(time.time() - self.keep_days * 86400)
        for job_id in old:
            delete_job_files(self.jobs_dir, job_id)
            self.store.delete(job_id)
        if old:
            logger.info("retention: deleted %d jobs finished over %g days ago", len(old), self.keep_days)
        return old

    def _loop(self) -> None:
        while not self._stopping.is_set():
            if time.time() - self._pruned > PRUNE_EVERY_S:
                self.prune()
            job = self.store.claim_next()
            if job is None:
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            self._run(job)

    def _run(self, job: dict[str, Any]) -> None:
        job_id = job["id"]
        job_dir = self.jobs_dir / job_id
        partial = job_dir / "result.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        started = time.perf_counter()
        logger.info("job %s (%s): started, attempt %d", job_id, job["name"], job["attempts"])
        try:
            result = self.generate_fn(
                job_dir / "bundle",
                partial,
                steps=job["settings"].get("steps"),
                seed=job["settings"].get("seed"),
                model=job["settings"].get("model"),
                progress=lambda fraction, stage: self.store.set_progress(job_id, fraction, stage),
                should_cancel=lambda: self._stopping.is_set() or self.store.cancel_requested(job_id),
            )
            generate_s = time.perf_counter() - started
            timings = {
                "queued_s": round(job["started"] - job["created"], 3),
                "generate_s": round(generate_s, 3),
                "model": result.get("timings", {}),
            }
            _collect_result(result, partial, timings)
            if self.store.cancel_requested(job_id):  # cancelled while the result was being written
                raise GenerationStopped("cancelled while writing the result")
            partial.rename(job_dir / "result")
        except Exception as error:  # the worker must outlive any model failure
            shutil.rmtree(partial, ignore_errors=True)
            if self.store.cancel_requested(job_id):
                self.store.finish(job_id, "cancelled", error="cancelled by the user")
            elif self._stopping.is_set():
                self.store.requeue(job_id, count_attempt=False)
            else:
                logger.error("job %s failed:\n%s", job_id, traceback.format_exc())
                self.store.finish(job_id, "failed", error=f"{type(error).__name__}: {error}")
            return
        self.store.finish(job_id, "done", timings=timings)
        logger.info("job %s: done in %.1fs", job_id, generate_s)


def _collect_result(result: dict, partial: Path, timings: dict) -> None:
    """Give the result fixed names inside ``partial``: ``result.mp4``, ``frames/`` and ``metrics.json``."""
    mp4 = Path(result["mp4"])
    if not mp4.is_file():
        raise RuntimeError(f"the model wrote no clip ({mp4.name} is missing)")
    if mp4 != partial / "result.mp4":
        shutil.move(mp4, partial / "result.mp4")
    frames_dir = result.get("frames_dir")
    if frames_dir and Path(frames_dir) != partial / "frames":
        shutil.move(frames_dir, partial / "frames")
    metrics = {"metrics": result.get("metrics", {}), "timings": timings}
    (partial / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
