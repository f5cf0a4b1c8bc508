"""A board's generation wall time in process and on local Ray clusters (``cinepregen bench ray``)."""

from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def generate_on(pool, shots: list[tuple[Path, Path]], steps: int | None) -> None:
    """Every (bundle, out folder) on the pool, as many at once as it has workers."""
    with ThreadPoolExecutor(pool.workers) as executor:
        list(executor.map(lambda shot: pool.generate(shot[0], shot[1], steps=steps), shots))


def run_board_benchmark(bundles: list[Path], worker_counts: list[int], weights: Path | None,
                        steps: int | None) -> dict:
    """The shots in this process one after another (the baseline, after one warm-up), then on a local Ray cluster
    of each worker count. Workers start and load the model before the clock starts (a running cluster has them
    loaded); that start-up is returned beside as ``ready_s``."""
    from backend.distributed.ray_pool import RayShotPool
    from backend.pipelines.generate import generate_shot

    rows = []
    with tempfile.TemporaryDirectory(prefix="cinepregen-bench-ray-") as tmp:
        generate_shot(bundles[0], Path(tmp) / "warm-up", weights=weights, steps=steps)
        start = time.perf_counter()
        for i, bundle in enumerate(bundles):
            generate_shot(bundle, Path(tmp) / f"here-{i}", weights=weights, steps=steps)
        in_process = time.perf_counter() - start
        for workers in worker_counts:
            start = time.perf_counter()
            pool = RayShotPool("local", workers=workers, weights=weights)
            try:
                generate_on(pool, [(bundles[0], Path(tmp) / f"warm-{workers}-{w}") for w in range(workers)], steps)
                ready = time.perf_counter() - start
                start = time.perf_counter()
                generate_on(pool, [(b, Path(tmp) / f"ray-{workers}-{i}") for i, b in enumerate(bundles)], steps)
                rows.append({"workers": workers, "seconds": time.perf_counter() - start, "ready_s": ready})
            finally:
                pool.shutdown()
    return {"cpus": os.cpu_count(), "in_process_s": in_process, "ray": rows}
