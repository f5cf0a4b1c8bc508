"""``cinepregen calibrate-colours``: measure the colour lock's reference anchor on training shots and write it into
a weights folder's ``pipeline.json`` (``backend.training.colour_calibration``)."""

import json
import sys
from pathlib import Path


def _run(args) -> int:
    from tqdm import tqdm

    from backend.pipelines.previs_pipeline import PrevisPipeline
    from backend.training.colour_calibration import anchor_weight_psnr, reference_gains
    from backend.training.dataset import list_shots

    try:
        gains = reference_gains(list_shots(Path(args.data), "train"))
        shots = list_shots(Path(args.weigh_on or args.data), "train")[: args.shots]
        pipeline = PrevisPipeline.from_pretrained(args.weights, device=args.device)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"gains from {gains['pictures']} picture and {gains['swatches']} swatch references: "
          f"picture {gains['picture_gain']}, swatch {gains['swatch_gain']}")
    try:
        with tqdm(total=len(shots), unit="shot", desc="anchor weight") as bar:
            scores = anchor_weight_psnr(lambda bundle: pipeline(bundle, lock_colours=False), shots, gains,
                                        progress=lambda done, total: bar.update(done - bar.n))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for weight, score in scores.items():
        print(f"weight {weight:.2f}: mean PSNR {score:.2f} dB")
    weight = max(scores, key=scores.get)
    calibration = {"weight": weight, "picture_gain": gains["picture_gain"], "swatch_gain": gains["swatch_gain"]}
    if args.write:
        config = Path(args.weights) / "pipeline.json"
        sampling = json.loads(config.read_text()) if config.is_file() else {}
        config.write_text(json.dumps({**sampling, "reference_colours": calibration}, indent=2) + "\n")
        print(f"wrote reference_colours (weight {weight}) to {config}")
    else:
        print(f"best weight {weight}; pass --write to store it in {Path(args.weights) / 'pipeline.json'}")
    return 0


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "calibrate-colours", help="measure how far the colour lock should trust each object's reference colour",
        description="On a dataset's training shots: the gains from a reference's subject colour to the albedo the "
                    "colour lock holds (medians over the targets, pictures and swatches apart), and the weight of "
                    "that anchor against the model's own colour that gives the best mean PSNR against the targets. "
                    "With --write they go into the weights folder's pipeline.json as reference_colours.",
    )
    parser.add_argument("--data", required=True, help="dataset folder: the gains are measured on its train/ split")
    parser.add_argument("--weights", required=True, help="the PrevisPipeline weights folder to calibrate")
    parser.add_argument("--weigh-on", default=None,
                        help="dataset folder whose train/ shots the anchor's weight is measured on: shots the model "
                             "was not trained on (`dataset build --seed` far from the training seeds; default: --data)")
    parser.add_argument("--shots", type=int, default=None,
                        help="weigh the anchor on at most N of those shots (default: all)")
    parser.add_argument("--device", default="cpu", help="torch device for generating (default: cpu)")
    parser.add_argument("--write", action="store_true", help="write the calibration into the folder's pipeline.json")
    parser.set_defaults(func=_run)
