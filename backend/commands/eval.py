"""``cinepregen eval``: score the previs model and its baselines on shot bundles, write eval.md and eval.json."""

import sys
from pathlib import Path


def _as_bundle(path: Path) -> Path | None:
    """``path`` itself when it is a bundle (folder or zip), its ``bundle/`` when it is a dataset shot, else None."""
    if (path / "shot.json").is_file() or (path.is_file() and path.suffix == ".zip"):
        return path
    if (path / "bundle" / "shot.json").is_file():
        return path / "bundle"
    return None


def find_bundles(specs: list[str]) -> list[Path]:
    """Shot bundles named by ``specs``: bundle folders or zips, dataset shot folders, comma-separated lists of
    them, or folders whose direct children are any of these (a dataset split such as ``DATA/heldout``)."""
    bundles: list[Path] = []
    for spec in specs:
        for item in filter(None, (s.strip() for s in spec.split(","))):
            path = Path(item)
            if (bundle := _as_bundle(path)) is not None:
                bundles.append(bundle)
            elif path.is_dir():
                children = [b for c in sorted(path.iterdir()) if (b := _as_bundle(c)) is not None]
                if not children:
                    raise ValueError(f"{path} is neither a shot bundle nor a folder of shot bundles")
                bundles.extend(children)
            else:
                raise ValueError(f"no shot bundle at {path}")
    return bundles


def _run(args) -> int:
    from tqdm import tqdm

    from backend.eval.evaluate import contact_sheet, evaluate_bundles, write_report
    from backend.pipelines.previs_pipeline import make_generate_fn

    try:
        bundles = find_bundles(args.bundles)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        generate_fn = make_generate_fn(weights=args.weights, steps=args.steps, device=args.device)
    except (OSError, ValueError) as error:  # a missing or damaged model folder (backend.models.folder_check)
        print(f"error: {error}", file=sys.stderr)
        return 2
    with tqdm(total=100, unit="%", desc="eval") as bar:

        def progress(fraction: float, stage: str) -> None:
            bar.set_postfix_str(stage)
            bar.update(round(100 * fraction) - bar.n)

        evaluation = evaluate_bundles(bundles, generate_fn, seed=args.seed, progress=progress)
    markdown, report = write_report(evaluation, args.out)
    sheet = Path(args.out) / "contact_sheet.png"
    contact_sheet(evaluation).save(sheet)
    print(markdown.read_text())
    print(f"wrote {markdown}, {report} and {sheet}")
    return 0


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "eval", help="score generated clips: temporal consistency, fidelity, reference binding, structure",
        description="Generate every given bundle with a model and score the clips: warping error against "
                    "independent frames, PSNR/SSIM against a target render when the bundle has one, leakage of a "
                    "reference edit against unmasked attention, binding before and after a swap, edge agreement. "
                    "Writes eval.json and eval.md (and a contact sheet) to --out.",
    )
    parser.add_argument(
        "--bundles", nargs="+", required=True, help="bundle folders or zips, comma lists, or folders of bundles"
    )
    parser.add_argument("--out", required=True, help="output folder for eval.md and eval.json")
    parser.add_argument("--weights", default=None, help="model folder (default: the pipeline's default weights)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's setting)")
    parser.add_argument("--seed", type=int, default=0, help="seed for every generated clip (default: 0)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.set_defaults(func=_run)
