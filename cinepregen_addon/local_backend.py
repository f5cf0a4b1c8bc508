"""A backend started from Blender (Start Local Backend), stopped with the add-on."""

from __future__ import annotations

import os
import subprocess
import urllib.parse
from pathlib import Path

from .core.backend_client import BackendError
from .jobs import client_for
from .preferences import BackendSettings, backend_python, local_data_folder

_local_backend: subprocess.Popen | None = None


def start_local_backend(settings: BackendSettings) -> tuple[subprocess.Popen, Path]:
    """Spawn ``<python> -m backend.cli serve`` on the preferences' loopback port; returns (process, log file)."""
    global _local_backend
    parsed = urllib.parse.urlsplit(settings.url.strip())
    host, port = parsed.hostname or "", parsed.port or 8765
    if host not in ("127.0.0.1", "localhost"):
        raise ValueError(f"a local backend listens on 127.0.0.1; the Backend URL is {settings.url!r}")
    if _local_backend is not None and _local_backend.poll() is None:
        raise ValueError(f"the local backend started from Blender is still running (pid {_local_backend.pid})")
    try:
        client_for(settings).health()
        raise ValueError(f"a backend already answers at {settings.url}")
    except BackendError:
        pass
    python = backend_python(settings)
    data = local_data_folder(settings)
    data.mkdir(parents=True, exist_ok=True)
    log_path = data / "backend.log"
    env = dict(os.environ)
    if settings.token:
        env["CINEPREGEN_TOKEN"] = settings.token  # not on the command line, where other users could read it
    command = [python, "-m", "backend.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--data", str(data)]
    with open(log_path, "ab") as log:
        _local_backend = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          cwd=data, env=env, start_new_session=True)
    return _local_backend, log_path


def stop_local_backend(timeout: float = 10.0) -> None:
    """Stop the backend this Blender session started, if any (the add-on is being disabled)."""
    global _local_backend
    process, _local_backend = _local_backend, None
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
