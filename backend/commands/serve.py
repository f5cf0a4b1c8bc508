"""``cinepregen serve``: the local backend that the add-on's Generate button talks to."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _token(args) -> str | None:
    """--token-file, else CINEPREGEN_TOKEN, else --token (visible to every user in ps: the last resort)."""
    if args.token_file:
        return Path(args.token_file).read_text().strip() or None
    return os.environ.get("CINEPREGEN_TOKEN") or args.token or None


def _run(args) -> int:
    from backend.adapters import adapter_for
    from backend.server.app import Settings
    from backend.server.guard import check_bind
    from backend.server.jobs import DamagedDatabase
    from backend.server.process import DataFolderBusy

    try:
        token = _token(args)
        check_bind(args.host, token)
    except (OSError, ValueError) as error:
        print(f"cinepregen serve: {error}", file=sys.stderr)
        return 2
    for folder in [args.weights, *(args.model or ())]:
        try:
            if folder is not None:
                adapter_for(folder).check()
        except (OSError, ValueError) as error:
            print(f"cinepregen serve: {error}", file=sys.stderr)
            return 2
    import socket

    import uvicorn

    from backend.server.app import create_app

    settings = Settings(
        data_dir=Path(args.data),
        weights=Path(args.weights) if args.weights else None,
        models=tuple(Path(folder) for folder in args.model or ()),
        device=args.device,
        token=token,
        max_upload_bytes=args.max_upload_mb * 2**20,
        max_frames=args.max_frames,
        max_width=args.max_size,
        max_height=args.max_size,
        max_queued=args.max_queued,
        keep_days=args.keep_days,
        allowed_hosts=tuple(args.allow_host or ()),
        ray=args.ray,
        ray_workers=args.workers,
    )
    if args.workers is not None and not args.ray:
        print("cinepregen serve: --workers needs --ray (in process, one job runs at a time)", file=sys.stderr)
        return 2
    try:
        app = create_app(settings)
    except (DataFolderBusy, DamagedDatabase, ValueError, ConnectionError) as error:
        print(f"cinepregen serve: {error}", file=sys.stderr)
        return 2
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as error:
        print(f"cinepregen serve: cannot listen on {args.host}:{args.port} ({error.strerror}); pick another --port",
              file=sys.stderr)
        return 2
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"CinePreGen backend on http://{host}:{port} (board at /, API docs at /docs), data in {args.data}",
          flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level=args.log_level))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C once it has shut down cleanly
        pass
    return 0


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "serve",
        help="run the local backend (HTTP API, job queue, review board)",
        description="Serve shot-bundle generation over HTTP. Binds 127.0.0.1 unless --host is given; any other "
        "address requires --token (or CINEPREGEN_TOKEN), which every request must then send as a Bearer token.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default: 8765)")
    parser.add_argument("--weights", default=None,
                        help="the default model's folder (default: backend/weights/previs-tiny; with neither "
                             "--weights nor --model every model shipped in backend/weights is served)")
    parser.add_argument("--model", action="append", metavar="DIR",
                        help="another model folder to serve, picked per job by its folder name (repeatable)")
    parser.add_argument("--data", default="out/backend", help="jobs database and results (default: out/backend)")
    parser.add_argument("--token-file", default=None,
                        help="file holding the token every request must send as 'Authorization: Bearer TOKEN' "
                             f"(at least {16} characters; or set CINEPREGEN_TOKEN)")
    parser.add_argument("--token", default=None,
                        help="the token itself (visible to other users in ps: prefer --token-file or CINEPREGEN_TOKEN)")
    parser.add_argument("--allow-host", action="append", metavar="NAME",
                        help="a host name this server answers to besides loopback ones (repeatable)")
    parser.add_argument("--keep-days", type=float, default=None,
                        help="delete finished jobs and their files after this many days (default: keep them)")
    parser.add_argument("--max-queued", type=int, default=200, help="most jobs waiting at once (default: 200)")
    parser.add_argument("--device", default="cpu", help="torch device for the model (default: cpu)")
    parser.add_argument("--ray", metavar="ADDRESS", help="run the jobs on a Ray cluster: its address (ray start "
                        "--head prints it; auto finds one on this machine) or local, a cluster started here")
    parser.add_argument("--workers", type=int, help="with --ray: model-holding workers, jobs run at once (default: "
                        "one per GPU of the cluster on a cuda --device, else 1)")
    parser.add_argument("--max-upload-mb", type=int, default=512, help="largest accepted bundle zip (default: 512)")
    parser.add_argument("--max-frames", type=int, default=240, help="most frames per shot (default: 240)")
    parser.add_argument("--max-size", type=int, default=2048, help="largest frame width or height (default: 2048)")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.set_defaults(func=_run)
