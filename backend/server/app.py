"""The local backend's HTTP API (FastAPI): shot bundles in, generated clips out, one model worker behind a queue.

Versioned JSON under ``/v1``; the review board at ``/``; OpenAPI docs at ``/docs``. Every bad input gets a 4xx whose
``detail`` names what is wrong, and the server keeps serving. Safety: every request passes ``guard.RequestGuard``
first (host, origin, token, upload size) before any body is read; an uploaded zip is extracted safely (no
traversal, no links, no bombs), held to the server's budgets and validated (``uploads.accept_bundle``) before a job
exists.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import shutil
import threading
import uuid
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

import backend
from backend.server.catalogue import (
    default_generate_fn,
    default_model_fields,
    describe_model,
    model_catalogue,
    ray_pool,
)
from backend.server.guard import RequestGuard, redact_tokens_in_access_log
from backend.server.jobs import FINISHED, GenerateFn, JobStore, Worker, delete_job_files
from backend.server.process import DataFolderLock
from backend.server.review_page import render_board
from backend.server.uploads import accept_bundle
from cinepregen_addon.core import bundle_checks

logger = logging.getLogger(__name__)

JOB_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class Settings:
    """What ``cinepregen serve`` configures; limits are checked on every upload."""

    data_dir: Path
    weights: Path | None = None  # the default model (None: backend/weights/previs-tiny)
    models: tuple[Path, ...] = ()  # more model folders served beside it, picked per job by name
    device: str = "cpu"
    token: str | None = None
    max_upload_bytes: int = 512 * 2**20
    upload_stall_seconds: float = 60.0  # an upload that sends nothing this long is answered 408
    max_extracted_bytes: int = 2 * 2**30
    max_frames: int = 240
    max_width: int = 2048
    max_height: int = 2048
    max_steps: int = 500
    max_attempts: int = 2
    max_total_pixels: int = 240 * 512 * 288  # frames x width x height of one bundle
    max_objects: int = 64
    max_reference_pixels: int = 2048 * 2048  # per reference image, read from its PNG header before decoding
    max_queued: int = 200  # jobs waiting at once; more are refused with 429
    keep_days: float | None = None  # finished jobs (and their files) older than this are deleted
    allowed_hosts: tuple[str, ...] = ()  # Host names served besides loopback ones (no token needed on loopback)
    ray: str | None = None  # a Ray cluster's address ("local": one started here) to run the jobs on
    ray_workers: int | None = None  # model-holding Ray workers (default: one per GPU, or 1)


DOCS_ASSETS = Path(importlib.util.find_spec("fastapi_offline").origin).parent / "static"  # Swagger UI 5, no CDN


def create_app(settings: Settings, generate_fn: GenerateFn | None = None) -> FastAPI:
    """The service: a job store and its worker under ``settings.data_dir``, and the HTTP API around them."""
    data_dir = Path(settings.data_dir)
    jobs_dir, incoming_dir = data_dir / "jobs", data_dir / "incoming"
    lock = DataFolderLock(data_dir).acquire()
    try:
        store = JobStore(data_dir / "jobs.sqlite")
    except Exception:
        lock.release()
        raise
    catalogue = model_catalogue(settings)
    models = [describe_model(name, folder) for name, folder in catalogue.items()]  # from configs, read once
    pool = None
    if settings.ray and generate_fn is None:
        try:
            pool, generate_fn = ray_pool(settings, catalogue)
        except Exception:
            store.close()
            lock.release()
            raise
    worker = Worker(store, jobs_dir, generate_fn or default_generate_fn(settings, catalogue), settings.max_attempts,
                    settings.keep_days, threads=pool.workers if pool is not None else 1)
    redact_tokens_in_access_log()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        shutil.rmtree(incoming_dir, ignore_errors=True)
        jobs_dir.mkdir(parents=True, exist_ok=True)
        worker.recover()
        worker.prune()
        worker.start()
        yield
        worker.stop()
        if pool is not None:
            pool.shutdown()
        store.close()
        lock.release()

    app = FastAPI(
        title="CinePreGen backend",
        version=backend.__version__,
        description="Shot bundles in, previs clips out. One model worker in process, or a pool of them on Ray; "
                    "jobs survive restarts.",
        lifespan=lifespan,
        docs_url=None,  # served below with local assets: Swagger UI's default comes from a CDN
        redoc_url=None,
    )
    app.mount("/docs-assets", StaticFiles(directory=str(DOCS_ASSETS)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="CinePreGen backend API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon.png")
    app.add_middleware(RequestGuard, token=settings.token, max_upload_bytes=settings.max_upload_bytes,
                       allowed_hosts=settings.allowed_hosts, stall_seconds=settings.upload_stall_seconds)
    app.state.store, app.state.worker, app.state.settings = store, worker, settings

    @app.exception_handler(StarletteHTTPException)
    async def explain_http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        detail = error.detail
        if error.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path[:120]}: the API is under /v1 (see /docs)"
        elif error.status_code == 405 and detail == "Method Not Allowed":
            detail = f"{request.method} is not allowed on {request.url.path[:120]} (see /docs)"
        return JSONResponse({"detail": detail}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def explain_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        parts = []
        for problem in error.errors():
            where = ".".join(str(p) for p in problem["loc"] if p not in ("body", "path", "query"))
            value = problem.get("input")
            got = f" (got {bundle_checks.short_repr(value)})" if isinstance(value, str | int | float) else ""
            parts.append(f"{where}: {problem['msg']}{got}")
        return JSONResponse({"detail": "; ".join(parts)}, status_code=422)

    job_files_lock = threading.Lock()  # a retry copies a job's files while a delete would remove them

    def create_job(job_id: str, name: str, job_settings: dict, info: dict) -> dict[str, Any]:
        """The job's row for its folder, already in place; the folder goes again if the row cannot be written, so
        no folder is left that the next start would list as a lost job."""
        try:
            return store.create(job_id, name, job_settings, info)
        except Exception:
            delete_job_files(jobs_dir, job_id)
            raise

    def job_or_error(job_id: str) -> dict[str, Any]:
        if not JOB_ID.fullmatch(job_id):
            raise HTTPException(422, f"malformed job id {job_id[:64]!r}: expected 32 lowercase hex digits")
        job = store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id} on this backend")
        return job

    def result_file(job_id: str, relative: str) -> Path:
        job = job_or_error(job_id)
        if job["status"] != "done":
            raise HTTPException(409, f"job {job_id} is {job['status']}, its result is not ready")
        path = jobs_dir / job_id / "result" / relative
        if not path.is_file():
            raise HTTPException(404, f"job {job_id} has no {relative}")
        return path

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def board() -> str:
        jobs = store.list()
        metrics = {}
        for job in jobs:
            path = jobs_dir / job["id"] / "result" / "metrics.json"
            if job["status"] == "done" and path.is_file():
                try:
                    metrics[job["id"]] = json.loads(path.read_text())
                except (OSError, ValueError, RecursionError):
                    metrics[job["id"]] = {}  # the board shows the job without figures
        return render_board(jobs, metrics)

    @app.get("/v1/health")
    def health() -> dict[str, Any]:
        """Which models this backend serves (the default first, with what each can do), on which device, and how
        many jobs wait."""
        running = [job["id"] for job in store.list() if job["status"] == "running"]
        limits = {key: value for key, value in asdict(settings).items() if key.startswith("max_")}
        return {
            "status": "ok",
            "version": backend.__version__,
            **default_model_fields(models[0]),
            "models": models,
            "device": settings.device,
            "queue_length": store.queue_length(),
            "running": running[0] if running else None,
            "limits": limits,
            "auth": bool(settings.token),
        }

    @app.post("/v1/jobs", status_code=201)
    def submit(
        bundle: UploadFile = File(..., description="the shot bundle as a zip (shot_bundle.zip_bundle)"),
        steps: int | None = Form(None, description="sampling steps (the model's default when absent)"),
        seed: int | None = Form(None, description="noise seed (the bundle's seed when absent)"),
        model: str | None = Form(None, description="a model name from /v1/health's models (the default when absent)"),
    ) -> dict[str, Any]:
        """Queue a shot: the zip is extracted and validated first, so a job always holds a readable bundle."""
        if steps is not None and not 1 <= steps <= settings.max_steps:
            raise HTTPException(422, f"steps must be between 1 and {settings.max_steps}, got {steps}")
        if seed is not None and not 0 <= seed < 2**63:
            raise HTTPException(422, f"seed must be between 0 and 2**63 - 1, got {seed}")
        if model is not None and model not in catalogue:
            raise HTTPException(422, f"no model {model[:80]!r} on this backend; it serves: {', '.join(catalogue)}")
        if store.queue_length() >= settings.max_queued:
            raise HTTPException(429, f"{settings.max_queued} jobs are already waiting; try again when some are done")
        job_id = uuid.uuid4().hex
        staging = incoming_dir / job_id
        staging.mkdir(parents=True)
        try:
            info = accept_bundle(bundle, staging, settings)
            (staging / "upload.zip").unlink()
            jobs_dir.mkdir(parents=True, exist_ok=True)
            staging.rename(jobs_dir / job_id)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        job_settings = {"steps": steps, "seed": seed, "model": model or next(iter(catalogue))}
        job = create_job(job_id, info.pop("name"), job_settings, info)
        worker.wake()
        logger.info("job %s (%s) queued", job_id, job["name"])
        return _public(job, jobs_dir)

    @app.get("/v1/jobs")
    def list_jobs() -> list[dict[str, Any]]:
        return [_public(job, jobs_dir) for job in store.list()]

    @app.get("/v1/jobs/{job_id}")
    def job_status(job_id: str) -> dict[str, Any]:
        return _public(job_or_error(job_id), jobs_dir)

    @app.delete("/v1/jobs/{job_id}")
    def cancel(job_id: str, files: bool = False) -> dict[str, Any]:
        """A queued job is cancelled at once; a running one stops at its next step (``cancel_requested``). With
        ``?files=true`` a finished job is deleted with all its files (its bundle, result and previews)."""
        job = job_or_error(job_id)
        if files:
            if job["status"] not in FINISHED:
                raise HTTPException(409, f"job {job_id} is {job['status']}: cancel it first, then delete its files")
            with job_files_lock:
                delete_job_files(jobs_dir, job_id)
                store.delete(job_id)
            return {"id": job_id, "deleted": True}
        if job["status"] in FINISHED:
            raise HTTPException(409, f"job {job_id} is already {job['status']} (add ?files=true to delete it)")
        return _public(store.cancel(job_id), jobs_dir)

    @app.get("/v1/jobs/{job_id}/result.mp4", response_class=FileResponse)
    def result_mp4(job_id: str) -> FileResponse:
        return FileResponse(result_file(job_id, "result.mp4"), media_type="video/mp4")

    @app.get("/v1/jobs/{job_id}/metrics.json", response_class=FileResponse)
    def metrics_json(job_id: str) -> FileResponse:
        return FileResponse(result_file(job_id, "metrics.json"), media_type="application/json")

    @app.get("/v1/jobs/{job_id}/frames/{index}.png", response_class=FileResponse)
    def frame_png(job_id: str, index: str) -> FileResponse:
        """The n-th generated frame (0-based, in shot order)."""
        result_file(job_id, "metrics.json")
        if not re.fullmatch(r"[0-9]{1,9}", index):
            raise HTTPException(422, f"frame index must be a non-negative integer, got {index[:32]!r}")
        frames = _frame_files(jobs_dir / job_id / "result" / "frames")
        if int(index) >= len(frames):
            raise HTTPException(404, f"job {job_id} has {len(frames)} frames; there is no frame {int(index)}")
        return FileResponse(frames[int(index)], media_type="image/png")

    @app.get("/v1/jobs/{job_id}/references/{index}.png", response_class=FileResponse)
    def reference_png(job_id: str, index: str) -> FileResponse:
        """The n-th reference image of the job's bundle (in the order of the job's ``references``)."""
        job = job_or_error(job_id)
        if not re.fullmatch(r"[0-9]{1,4}", index):
            raise HTTPException(422, f"reference index must be a non-negative integer, got {index[:32]!r}")
        files = job["info"].get("reference_files", [])
        if int(index) >= len(files):
            raise HTTPException(404, f"job {job_id} has {len(files)} reference images")
        path = jobs_dir / job_id / "bundle" / files[int(index)]
        if not bundle_checks.is_safe_relative_path(files[int(index)]) or not path.is_file():
            raise HTTPException(404, f"reference {int(index)} of job {job_id} is not in its bundle any more")
        return FileResponse(path, media_type="image/png")

    @app.post("/v1/jobs/{job_id}/retry", status_code=201)
    def retry(job_id: str) -> dict[str, Any]:
        """A new take of a finished job: the same bundle and settings, queued as a new job."""
        job = job_or_error(job_id)
        if job["status"] not in FINISHED:
            raise HTTPException(409, f"job {job_id} is {job['status']}; retry it once it has finished")
        if not (jobs_dir / job_id / "bundle").is_dir():
            raise HTTPException(410, f"job {job_id} no longer has its bundle; send the shot again")
        if store.queue_length() >= settings.max_queued:
            raise HTTPException(429, f"{settings.max_queued} jobs are already waiting; try again when some are done")
        new_id = uuid.uuid4().hex
        staging = incoming_dir / new_id
        with job_files_lock:  # a delete of the same job waits: no half-copied bundle
            if store.get(job_id) is None or not (jobs_dir / job_id / "bundle").is_dir():
                raise HTTPException(410, f"job {job_id} was deleted; send the shot again")
            try:
                for part in ("bundle", "previews"):
                    if (jobs_dir / job_id / part).is_dir():
                        shutil.copytree(jobs_dir / job_id / part, staging / part)
                staging.rename(jobs_dir / new_id)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            new = create_job(new_id, job["name"], job["settings"], job["info"])
        worker.wake()
        return _public(new, jobs_dir)

    @app.get("/v1/jobs/{job_id}/previews/{name}.png", response_class=FileResponse)
    def preview_png(job_id: str, name: str) -> FileResponse:
        """A thumbnail strip of one guidance pass, made when the bundle was accepted."""
        job = job_or_error(job_id)
        if name not in job["info"].get("previews", []):
            raise HTTPException(404, f"no preview {name[:32]!r}; this job has {job['info'].get('previews', [])}")
        path = jobs_dir / job_id / "previews" / f"{name}.png"
        if not path.is_file():
            raise HTTPException(404, f"the {name} preview of job {job_id} was deleted from the data folder")
        return FileResponse(path, media_type="image/png")

    return app


def _frame_files(frames_dir: Path) -> list[Path]:
    return sorted(frames_dir.glob("*.png")) if frames_dir.is_dir() else []


def _public(job: dict[str, Any], jobs_dir: Path) -> dict[str, Any]:
    """A job as the API shows it: its state, and links to whatever it already has."""
    base = f"/v1/jobs/{job['id']}"
    info = job["info"]
    links: dict[str, Any] = {"self": base, "previews": [f"{base}/previews/{n}.png" for n in info.get("previews", [])]}
    if job["status"] == "done":
        links.update(
            result=f"{base}/result.mp4",
            metrics=f"{base}/metrics.json",
            frame_count=len(_frame_files(jobs_dir / job["id"] / "result" / "frames")),
            frame=f"{base}/frames/{{index}}.png",
        )
    return {
        "id": job["id"],
        "name": job["name"],
        "status": job["status"],
        "stage": job["stage"],
        "progress": job["progress"],
        "created": job["created"],
        "started": job["started"],
        "finished": job["finished"],
        "attempts": job["attempts"],
        "cancel_requested": job["cancel_requested"],
        "settings": job["settings"],
        "frames": info.get("frames"),
        "resolution": info.get("resolution"),
        "timings": job["timings"],
        "error": job["error"],
        "links": links,
    }
