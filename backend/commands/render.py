"""``cinepregen render``: a whole storyboard from a .blend to one clip per shot, without Blender's UI.

The passes of every shot are rendered here (Cycles, in this process); the clips are generated in this process too,
or by a backend (``--backend URL``) while the next shot renders. ``DIR/summary.json`` lists every shot with its
clip, bundle, timings and metrics, or the reason it failed; the exit code is 1 when any shot failed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path


def _run(args) -> int:
    from backend.commands.render_passes import addon_registered
    from cinepregen_addon.core.backend_client import BackendError

    try:
        with addon_registered():
            return render_storyboard(args)
    except (ValueError, BackendError, OSError) as error:
        print(f"cinepregen render: {error}", file=sys.stderr)
        return 1


def _open_storyboard(blend: Path, names: list[str] | None, resolution: tuple[int, int] | None):
    """The scene of the .blend and the render specs of the chosen shots (all of them by default)."""
    import bpy

    from backend.commands.render_passes import is_blend_file
    from cinepregen_addon import render_passes

    if not blend.is_file():
        raise ValueError(f"{blend} does not exist")
    if not is_blend_file(blend):
        raise ValueError(f"{blend} is not a .blend file (open it in Blender and save it as .blend)")
    bpy.ops.wm.open_mainfile(filepath=str(blend.resolve()))
    scene = bpy.context.scene
    specs = render_passes.storyboard_shot_specs(scene, resolution=resolution)
    if names:
        known = [spec.name for spec in specs]
        missing = [name for name in names if name not in known]
        if missing:
            raise ValueError(f"no shot named {', '.join(missing)} in {blend.name} (shots: {', '.join(known)})")
        specs = [spec for spec in specs if spec.name in names]
    if not specs:
        raise ValueError(f"the storyboard of {blend.name} has no shots")
    return scene, specs


class _BoardProgress:
    """One bar for the whole board: each shot is 100 units, its passes the first 30, its generation the rest."""

    def __init__(self, bar, shots: int):
        self.bar = bar
        self.fractions = [0.0] * shots

    def shot(self, index: int, start: float, span: float, name: str):
        def report(fraction: float, stage: str) -> None:
            self.fractions[index] = start + span * fraction
            self.bar.set_postfix_str(f"{name}: {stage}")
            self.bar.update(round(100 * sum(self.fractions)) - self.bar.n)

        return report


def render_storyboard(args) -> int:
    from tqdm import tqdm

    from cinepregen_addon.core import shot_bundle
    from cinepregen_addon.core.backend_client import BackendClient

    blend, out = Path(args.blend), Path(args.out)
    client = pool = None
    if args.backend and args.ray:
        raise ValueError("give --backend or --ray, not both")
    if args.workers is not None and not args.ray:
        raise ValueError("--workers needs --ray (the in-process path and a backend run one shot at a time)")
    if args.backend:
        token = args.token or os.environ.get("CINEPREGEN_TOKEN") or None
        client = BackendClient(args.backend, token, timeout=10.0)
        client.health()  # fail before rendering anything when the backend is not there
    size = (args.width, args.height) if args.width and args.height else None
    if (args.width is None) != (args.height is None):
        raise ValueError("give --width and --height together (or neither, for the storyboard's pass resolution)")
    scene, specs = _open_storyboard(blend, args.shots, size)
    if args.ray:
        from backend.distributed.ray_pool import RayShotPool

        pool = RayShotPool(args.ray, workers=args.workers, device=args.device, weights=args.weights)

    from cinepregen_addon import render_passes
    from cinepregen_addon.core.names import shot_folder_name

    out.mkdir(parents=True, exist_ok=True)
    board = [shot.name for shot in scene.cinepregen.shots]  # folder names are the board's, whichever are rendered
    shots = []
    generating: list[tuple[dict, Future]] = []
    executor = ThreadPoolExecutor(max_workers=pool.workers) if pool is not None else None
    with tqdm(total=100 * len(specs), unit="%", desc="render") as bar:
        progress = _BoardProgress(bar, len(specs))
        for index, spec in enumerate(specs):
            folder = shot_folder_name(spec.name, board)
            record = {"name": spec.name, "frame_start": spec.frame_start, "frame_end": spec.frame_end,
                      "folder": folder}
            shots.append(record)
            try:
                started = time.perf_counter()
                target = out / "bundles" / folder
                if (target / "shot.json").is_file():  # a bundle of an earlier run into the same DIR
                    shutil.rmtree(target)
                bundle = render_passes.render_shot_bundle(
                    scene, spec, target, progress.shot(index, 0.0, 0.3, spec.name)
                )
                record["bundle"] = str(bundle)
                record["render_s"] = round(time.perf_counter() - started, 3)
                if pool is not None:  # generated on the cluster while the next shot's passes render
                    generating.append((record, executor.submit(
                        _generate_on_pool, pool, args, bundle, out, folder, record,
                        progress.shot(index, 0.3, 0.7, spec.name))))
                elif client is None:
                    _generate_here(args, bundle, out, folder, record, progress.shot(index, 0.3, 0.7, spec.name))
                else:
                    zip_path = shot_bundle.zip_bundle(bundle, out / "bundles" / f"{folder}.zip")
                    record["job_id"] = client.submit(zip_path, {"steps": args.steps})
            except Exception as error:  # one failing shot must not lose the others
                record["error"] = f"{type(error).__name__}: {error}"
                bar.write(f"{spec.name}: failed: {record['error']}")
        if client is not None:
            _collect_from_backend(client, shots, out, progress, args.timeout)
        if pool is not None:
            try:
                for record, future in generating:
                    try:
                        future.result()
                    except Exception as error:  # one failing shot must not lose the others
                        record["error"] = f"{type(error).__name__}: {error}"
                        bar.write(f"{record['name']}: failed: {record['error']}")
            finally:
                executor.shutdown(cancel_futures=True)
                pool.shutdown()

    where = args.backend or (f"ray {args.ray} ({pool.workers} workers)" if pool is not None else "in-process")
    summary = {"blend": str(blend.resolve()), "backend": where, "shots": shots}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    for record in shots:
        print(f"{record['name']}: {record.get('mp4') or 'FAILED: ' + record.get('error', '?')}")
    print(f"summary: {out / 'summary.json'}")
    return 1 if any("error" in record for record in shots) else 0


def _generate_here(args, bundle: Path, out: Path, folder: str, record: dict, progress) -> None:
    from backend.pipelines.generate import generate_shot

    started = time.perf_counter()
    result = generate_shot(bundle, out / "work" / folder, weights=args.weights, steps=args.steps,
                           device=args.device, progress=progress)
    _keep_result(result, out, folder, record, started)


def _generate_on_pool(pool, args, bundle: Path, out: Path, folder: str, record: dict, progress) -> None:
    started = time.perf_counter()
    result = pool.generate(bundle, out / "work" / folder, steps=args.steps, progress=progress)
    _keep_result(result, out, folder, record, started)


def _keep_result(result: dict, out: Path, folder: str, record: dict, started: float) -> None:
    mp4 = shutil.copyfile(result["mp4"], out / f"{folder}.mp4")
    record.update(mp4=str(mp4), generate_s=round(time.perf_counter() - started, 3),
                  metrics=result.get("metrics", {}), timings=result.get("timings", {}))


def _collect_from_backend(client, shots: list[dict], out: Path, progress: _BoardProgress, timeout: float) -> None:
    """Wait for every submitted shot, downloading each clip as it finishes; Ctrl-C cancels what is left."""
    from cinepregen_addon.core.backend_client import FINISHED, BackendError

    waiting = {record["job_id"]: (index, record) for index, record in enumerate(shots) if "job_id" in record}
    deadline = time.monotonic() + timeout
    try:
        while waiting and time.monotonic() < deadline:
            for job_id, (index, record) in list(waiting.items()):
                job = client.status(job_id)
                stage = job["stage"] or job["status"]
                progress.shot(index, 0.3, 0.7, record["name"])(float(job["progress"] or 0), stage)
                if job["status"] == "done":
                    folder = record["folder"]
                    clip, metrics = client.download(job_id, out / "work" / folder)
                    record.update(mp4=str(shutil.copyfile(clip, out / f"{folder}.mp4")),
                                  generate_s=job["timings"].get("generate_s"), timings=job["timings"],
                                  metrics=json.loads(metrics.read_text()).get("metrics", {}))
                elif job["status"] in FINISHED:
                    record["error"] = f"job {job_id} {job['status']}: {job.get('error') or 'no reason given'}"
                    progress.bar.write(f"{record['name']}: failed: {record['error']}")
                if job["status"] in FINISHED:
                    del waiting[job_id]
            if waiting:
                time.sleep(0.5)
    except KeyboardInterrupt:
        for job_id in waiting:
            try:
                client.cancel(job_id)
            except BackendError:
                pass
        raise
    except BackendError as error:
        reason = str(error)
    else:
        reason = f"not finished after {timeout:g}s"
    for _, record in waiting.values():
        record["error"] = reason


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "render",
        help="render the passes and generate a clip for every storyboard shot of a .blend",
        description="Batch a storyboard: open the .blend, render every shot's guidance passes, generate each shot "
        "(in this process, or on a backend with --backend) and write DIR/<shot>.mp4 and DIR/summary.json.",
    )
    parser.add_argument("blend", help="the .blend file with a CinePreGen storyboard")
    parser.add_argument("--shots", nargs="+", metavar="NAME", help="only these shots (default: all)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--backend", metavar="URL", help="generate on this backend, e.g. http://127.0.0.1:8765 "
                        "(default: in this process)")
    parser.add_argument("--token", help="backend token (default: $CINEPREGEN_TOKEN)")
    parser.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    parser.add_argument("--weights", help="weights folder for in-process generation (default: previs-tiny)")
    parser.add_argument("--device", default="cpu", help="torch device for in-process generation (default: cpu)")
    parser.add_argument("--width", type=int, default=None,
                        help="pass and clip width (default: the storyboard's pass resolution)")
    parser.add_argument("--height", type=int, default=None,
                        help="pass and clip height (default: the storyboard's pass resolution)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="longest wait for the backend, in seconds")
    parser.add_argument("--ray", metavar="ADDRESS", help="generate on a Ray cluster: its address (ray start --head "
                        "prints it; auto finds one on this machine) or local, a cluster started here for this run")
    parser.add_argument("--workers", type=int, help="with --ray: model-holding workers (default: one per GPU of the "
                        "cluster on a cuda --device, else 1; local: this many CPUs)")
    parser.set_defaults(func=_run)
