"""The server process around the app: one server per data folder (``DataFolderLock``), and uvicorn in a thread for
the demo, batch renders and tests (``serve_in_thread``)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi import FastAPI

from backend.server.guard import check_bind


class DataFolderBusy(Exception):
    """Another server holds the data folder."""


class DataFolderLock:
    """An exclusive lock on ``<data>/server.lock`` (flock, released by the OS if the process dies): two servers on
    one data folder would both run its queue and re-queue each other's running job."""

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / "server.lock"
        self._file = None

    def acquire(self) -> DataFolderLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise DataFolderBusy(f"another CinePreGen server ({holder}) already uses the data folder "
                                 f"{self.path.parent}; stop it, or pass another --data") from None
        handle.truncate(0)
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a background thread (the demo, batch renders, tests); yields its URL and stops
    it, with the app's shutdown (the running job goes back to the queue), on exit. Port 0 picks a free port."""
    import uvicorn

    check_bind(host, app.state.settings.token)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="cinepregen-server", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"the backend did not start on {host}:{port}")
            time.sleep(0.01)
        bound_port = sock.getsockname()[1]
        yield f"http://{f'[{host}]' if ':' in host else host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()
