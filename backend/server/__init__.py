"""The local backend service: HTTP API (``app``), the checks every request passes first (``guard``), uploaded
bundles on their way in (``uploads``), the models served (``catalogue``), persistent job queue (``jobs``) and review
board (``review_page``).

``measure_status_rps`` is the figure the service is judged by while the model works: how many status polls per
second it answers on loopback with the add-on's own client.
"""

from __future__ import annotations

import time


def measure_status_rps(url: str, job_id: str, seconds: float, token: str | None = None) -> float:
    """Status requests per second answered in ``seconds`` of back-to-back polling with ``BackendClient``."""
    from cinepregen_addon.core.backend_client import BackendClient

    client = BackendClient(url, token=token)
    count = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        client.status(job_id)
        count += 1
    return count / elapsed
