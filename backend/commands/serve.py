"""``cinepregen serve``: the local backend that the add-on's Generate button talks to."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _run(args) -> int:
    from backend.server.app import Settings, check_bind

    token = args.token or os.environ.get("CINEPREGEN_TOKEN") or None
    try:
        check_bind(args.host, token)
    except ValueError as error:
        print(f"cinepregen serve: {error}", file=sys.stderr)
        return 2
    import uvicorn

    from backend.server.app import create_app

    settings = Settings(
        data_dir=Path(args.data),
        weights=Path(args.weights) if args.weights else None,
        device=args.device,
        token=token,
        max_upload_bytes=args.max_upload_mb * 2**20,
        max_frames=args.max_frames,
        max_width=args.max_size,
        max_height=args.max_size,
    )
    print(f"CinePreGen backend on http://{args.host}:{args.port} (board at /, API docs at /docs), data in {args.data}")
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level)
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
    parser.add_argument("--weights", default=None, help="model weights folder (default: backend/weights/previs-tiny)")
    parser.add_argument("--data", default="out/backend", help="jobs database and results (default: out/backend)")
    parser.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN' on every request")
    parser.add_argument("--device", default="cpu", help="torch device for the model (default: cpu)")
    parser.add_argument("--max-upload-mb", type=int, default=512, help="largest accepted bundle zip (default: 512)")
    parser.add_argument("--max-frames", type=int, default=240, help="most frames per shot (default: 240)")
    parser.add_argument("--max-size", type=int, default=2048, help="largest frame width or height (default: 2048)")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.set_defaults(func=_run)
