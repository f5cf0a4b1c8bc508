"""``cinepregen generate BUNDLE --out DIR``: generate one shot's clip from its shot bundle."""

import sys


def _run(args) -> int:
    from tqdm import tqdm

    from backend.pipelines.generate import generate_shot

    with tqdm(total=100, unit="%", desc="generate") as bar:

        def progress(fraction: float, stage: str) -> None:
            bar.set_postfix_str(stage)
            bar.update(round(100 * fraction) - bar.n)

        try:
            result = generate_shot(args.bundle, args.out, weights=args.weights, steps=args.steps, seed=args.seed,
                                   device=args.device, progress=progress)
        except (FileNotFoundError, ValueError) as error:
            bar.close()
            print(f"error: {error}", file=sys.stderr)
            return 2
    print(f"wrote {result['mp4']} and {result['frames_dir']} in {result['timings']['total_s']:.1f} s")
    return 0


def add_parser(subparsers):
    parser = subparsers.add_parser("generate", help="generate a shot's clip (mp4 + PNG frames) from a shot bundle")
    parser.add_argument("bundle", help="shot bundle folder or zip")
    parser.add_argument("--out", required=True, help="output folder for shot.mp4, frames/ and metrics.json")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's setting)")
    parser.add_argument("--seed", type=int, default=None, help="noise seed (default: the bundle's seed)")
    parser.add_argument("--weights", default=None, help="model folder (default: backend/weights/previs-tiny)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.set_defaults(func=_run)
