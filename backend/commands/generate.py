"""``cinepregen generate BUNDLE --out DIR``: generate one shot's clip from its shot bundle."""

import sys


def _problem(args) -> str | None:
    """What is wrong with the arguments, found before the model is loaded."""
    from pathlib import Path

    if not Path(args.bundle).exists():
        return f"no shot bundle at {args.bundle} (a bundle folder or zip from Render Guidance Passes)"
    if args.steps is not None and args.steps < 1:
        return f"--steps must be at least 1, got {args.steps}"
    if args.seed is not None and not 0 <= args.seed < 2**63:
        return f"--seed must be between 0 and 2**63 - 1, got {args.seed}"
    import torch

    from backend.adapters import adapter_for

    if args.weights is not None:
        try:
            adapter_for(args.weights).check()
        except (OSError, ValueError) as error:
            return str(error)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        return f"--device {args.device}: this torch build has no usable CUDA device; use --device cpu"
    if args.device not in ("cpu", "mps") and not args.device.startswith("cuda"):
        return f"--device must be cpu, cuda, cuda:N or mps, got {args.device!r}"
    return None


def _run(args) -> int:
    from tqdm import tqdm

    from backend.pipelines.generate import generate_shot

    problem = _problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2

    with tqdm(total=100, unit="%", desc="generate") as bar:

        def progress(fraction: float, stage: str) -> None:
            bar.set_postfix_str(stage)
            bar.update(round(100 * fraction) - bar.n)

        try:
            result = generate_shot(args.bundle, args.out, weights=args.weights, steps=args.steps, seed=args.seed,
                                   device=args.device, progress=progress)
        except (OSError, ValueError) as error:
            bar.close()
            print(f"error: {error}", file=sys.stderr)
            return 2
    print(f"wrote {result['mp4']} and {result['frames_dir']} in {result['timings']['total_s']:.1f} s")
    return 0


def add_parser(subparsers):
    from backend.adapters import ADAPTERS, shipped_models

    families = ", ".join(adapter.family for adapter in ADAPTERS)
    shipped = ", ".join(folder.name for folder in shipped_models())
    parser = subparsers.add_parser(
        "generate", help="generate a shot's clip (mp4 + PNG frames) from a shot bundle",
        description="Generate one shot's clip from its shot bundle with a local model folder (never downloaded). "
                    "Writes shot.mp4, frames/ and metrics.json to --out.")
    parser.add_argument("bundle", help="shot bundle folder or zip")
    parser.add_argument("--out", required=True, help="output folder for shot.mp4, frames/ and metrics.json")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's setting)")
    parser.add_argument("--seed", type=int, default=None, help="noise seed (default: the bundle's seed)")
    parser.add_argument("--weights", default=None, help=f"model folder, of a family this backend runs "
                        f"({families}): shipped here are {shipped}; a Wan 2.1 VACE diffusers folder works too "
                        "(default: backend/weights/previs-tiny)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.set_defaults(func=_run)
