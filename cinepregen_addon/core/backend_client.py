"""The add-on's one door to the backend: a small HTTP client on the standard library only (urllib, json), so it
runs inside Blender's own Python with no extra packages.

Every failure becomes a ``BackendError`` whose message says what happened in the artist's words (not running,
no answer in time, refused with the server's own reason), never a traceback or a hang: every call has a timeout.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8765"
FINISHED = ("done", "failed", "cancelled")


class BackendError(RuntimeError):
    """The backend could not be reached or refused a request; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def encode_multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body and its content type; ``files`` maps a field to (file name, bytes)."""
    boundary = f"cinepregen-{uuid.uuid4().hex}"
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data) in files.items():
        safe_name = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{safe_name}"\r\n'
            "Content-Type: application/zip\r\n\r\n"
        )
        parts += [head.encode(), data, b"\r\n"]
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class BackendClient:
    """``BackendClient(url, token)``: health, submit a shot bundle zip, poll, cancel, list, download.

    ``timeout`` bounds every quick call; uploads and downloads get ``transfer_timeout`` (a socket timeout: the
    longest silence allowed, not the total time).
    """

    def __init__(
        self, url: str = DEFAULT_URL, token: str | None = None, timeout: float = 5.0, transfer_timeout: float = 120.0
    ):
        parsed = urllib.parse.urlsplit(url.strip())
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"backend URL must look like http://127.0.0.1:8765, got {url!r}")
        self.url = url.strip().rstrip("/")
        self.token = token or None
        self.timeout = timeout
        self.transfer_timeout = transfer_timeout
        # A loopback backend must never be reached through a proxy set in the environment.
        loopback = parsed.hostname in ("localhost", "::1") or parsed.hostname.startswith("127.")
        handlers = [urllib.request.ProxyHandler({})] if loopback else []
        self._opener = urllib.request.build_opener(*handlers)

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> tuple[bytes, str]:
        """(body, content type) of a successful answer; ``BackendError`` for everything else."""
        request = urllib.request.Request(self.url + path, data=body, method=method)
        if content_type:
            request.add_header("Content-Type", content_type)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        where = f"{method} {self.url}{path}"
        try:
            with self._opener.open(request, timeout=timeout or self.timeout) as response:
                return response.read(), response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as error:
            raise BackendError(f"{where}: HTTP {error.code}: {_server_message(error)}", error.code) from None
        except urllib.error.URLError as error:
            reason = error.reason
            if isinstance(reason, ConnectionRefusedError):
                raise BackendError(f"no backend running at {self.url} (connection refused)") from None
            if isinstance(reason, TimeoutError):
                raise BackendError(f"{where}: no answer within {timeout or self.timeout:g}s") from None
            if isinstance(reason, socket.gaierror):
                raise BackendError(f"cannot resolve the backend host in {self.url}: {reason}") from None
            raise BackendError(f"{where}: cannot reach the backend: {reason}") from None
        except TimeoutError:
            raise BackendError(f"{where}: no answer within {timeout or self.timeout:g}s") from None
        except (http.client.HTTPException, OSError) as error:
            hint = " (the upload may exceed the backend's limit; see its /v1/health limits)" if body else ""
            raise BackendError(f"{where}: the connection failed: {error}{hint}") from None

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        data, _ = self._request(method, path, **kwargs)
        try:
            return json.loads(data)
        except ValueError:
            raise BackendError(f"{method} {self.url}{path}: the answer is not JSON: {data[:200]!r}") from None

    def health(self) -> dict[str, Any]:
        """Model, weights, quantization, device and queue length of the backend."""
        return self._json("GET", "/v1/health")

    def submit(self, bundle_zip_path: str | Path, settings: dict[str, int | str] | None = None) -> str:
        """Queue a shot bundle zip; ``settings`` may hold ``steps``, ``seed`` and ``model`` (a name from
        ``health()["models"]``). Returns the job id."""
        path = Path(bundle_zip_path)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise BackendError(f"cannot read the shot bundle {path}: {error}") from None
        fields = {key: value if isinstance(value, str) else str(int(value))
                  for key, value in (settings or {}).items() if value is not None}
        body, content_type = encode_multipart(fields, {"bundle": (path.name, data)})
        job = self._json("POST", "/v1/jobs", body=body, content_type=content_type, timeout=self.transfer_timeout)
        return job["id"]

    def status(self, job_id: str) -> dict[str, Any]:
        """status (queued, running, done, failed, cancelled), stage, progress 0-1, timings, error."""
        return self._json("GET", f"/v1/jobs/{_quote(job_id)}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._json("DELETE", f"/v1/jobs/{_quote(job_id)}")

    def list_jobs(self) -> list[dict[str, Any]]:
        return self._json("GET", "/v1/jobs")

    def wait(self, job_id: str, timeout: float, poll_interval: float = 0.5) -> dict[str, Any]:
        """Poll until the job finishes (for scripts; the add-on polls from ``bpy.app.timers`` instead)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.status(job_id)
            if job["status"] in FINISHED:
                return job
            if time.monotonic() > deadline:
                raise BackendError(f"job {job_id} still {job['status']} after {timeout:g}s")
            time.sleep(poll_interval)

    def download(self, job_id: str, dest_folder: str | Path) -> list[Path]:
        """Write ``result.mp4`` and ``metrics.json`` of a finished job into ``dest_folder``; returns their paths.

        Each file appears under its final name only once complete, so a reader never sees half a clip."""
        dest = Path(dest_folder)
        dest.mkdir(parents=True, exist_ok=True)
        paths = []
        for name in ("result.mp4", "metrics.json"):
            data, _ = self._request("GET", f"/v1/jobs/{_quote(job_id)}/{name}", timeout=self.transfer_timeout)
            partial = dest / f".{name}.partial"
            partial.write_bytes(data)
            partial.replace(dest / name)
            paths.append(dest / name)
        return paths


def _quote(job_id: str) -> str:
    return urllib.parse.quote(str(job_id), safe="")


def _server_message(error: urllib.error.HTTPError) -> str:
    """The backend's own reason (FastAPI's ``detail``), or the start of whatever it sent."""
    try:
        raw = error.read()
    except OSError:
        raw = b""
    try:
        detail = json.loads(raw).get("detail", raw.decode(errors="replace"))
    except (ValueError, AttributeError):
        detail = raw.decode(errors="replace")[:300] or error.reason
    return detail if isinstance(detail, str) else json.dumps(detail)
