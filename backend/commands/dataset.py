"""``cinepregen dataset build``: procedural training and held-out shots, reproducible from a seed."""

import sys
from pathlib import Path


def _build(args):
    from tqdm import tqdm

    from backend.training.dataset import DatasetConfig, build_dataset

    config = DatasetConfig(shots=args.shots, heldout_shots=args.heldout, frames=args.frames, seed=args.seed,
                           resolution=(args.width, args.height), target_samples=args.samples,
                           asset_share=args.asset_share, asset_dir=args.assets)
    with tqdm(desc="dataset", unit="shot") as bar:
        def progress(done, total):
            bar.total = total
            bar.n = done
            bar.refresh()

        try:
            build_dataset(Path(args.out), config, progress)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    print(f"dataset ready in {args.out}")
    return 0


def add_parser(subparsers):
    parser = subparsers.add_parser("dataset", help="build the procedural training data")
    sub = parser.add_subparsers(dest="dataset_command", required=True)
    build = sub.add_parser("build", help="render procedural shots into bundles with Cycles target clips")
    build.add_argument("--out", required=True, help="dataset folder (resumes a partial build)")
    build.add_argument("--shots", type=int, default=200, help="training shots (default 200)")
    build.add_argument("--heldout", type=int, default=16, help="held-out shots, never trained on (default 16)")
    build.add_argument("--frames", type=int, default=24, help="frames per shot (default 24)")
    build.add_argument("--width", type=int, default=256, help="frame width in pixels (default 256)")
    build.add_argument("--height", type=int, default=144, help="frame height in pixels (default 144)")
    build.add_argument("--assets", help="the glTF asset pack (default: $CINEPREGEN_ASSETS or ../shared/assets)")
    build.add_argument("--asset-share", type=float, default=0.5,
                       help="share of scenes whose subject is a glTF character, vehicle or prop (default 0.5)")
    build.add_argument("--samples", type=int, default=8, help="Cycles samples of the target render (denoised)")
    build.add_argument("--seed", type=int, default=0, help="scene seed of the first shot (default 0)")
    build.set_defaults(func=_build)
