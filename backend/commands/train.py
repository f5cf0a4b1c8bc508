"""``cinepregen train``: train the previs model (resumable)."""

import sys


def _train(args):
    from backend.training.train import TrainConfig, train

    config = TrainConfig(data=args.data, out=args.out, preset=args.preset, steps=args.steps,
                         batch_size=args.batch_size, clip_frames=args.clip_frames, lr=args.lr, seed=args.seed,
                         warmup=args.warmup, reference_swap=args.reference_swap, init_from=args.init_from,
                         val_every=args.val_every, max_minutes=args.max_minutes,
                         stop_at=args.stop_at, context_frames=args.context_frames)
    try:
        final = train(config, progress=lambda line: print(line, flush=True))
    except (ValueError, FileNotFoundError) as error:
        print(f"train: {error}", file=sys.stderr)
        return 2
    print(f"EMA weights saved to {final}")
    return 0


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "train", help="train the previs model on a dataset (resumes from --out)",
        description="Train the previs DiT, its reference encoder and its frame refiner on a dataset from "
                    "`cinepregen dataset build`. Run the same command again to resume from --out/checkpoint.pt.")
    parser.add_argument("--data", required=True, help="dataset folder from `cinepregen dataset build`")
    parser.add_argument("--out", required=True, help="run folder: checkpoint.pt, log.jsonl, final/")
    parser.add_argument("--preset", default="previs-tiny", help="model size (previs-tiny, previs-small, tiny-test)")
    parser.add_argument("--steps", type=int, default=4000, help="total optimiser steps across resumed runs")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per step (default 4)")
    parser.add_argument("--clip-frames", type=int, default=16,
                        help="frames per training window, the generation window of the saved pipeline (default 16)")
    parser.add_argument("--context-frames", type=int, default=4,
                        help="clean context frames a window of a long shot starts with (default 4)")
    parser.add_argument("--lr", type=float, default=4e-4, help="peak learning rate (default 4e-4)")
    parser.add_argument("--warmup", type=int, default=100, help="linear learning-rate warm-up steps")
    parser.add_argument("--reference-swap", type=float, default=0.25,
                        help="share of samples where one object wears another's reference, scored outside it")
    parser.add_argument("--init-from", default=None,
                        help="saved pipeline folder to fine-tune (e.g. backend/weights/previs-tiny); "
                             "its sampling defaults carry over to final/")
    parser.add_argument("--val-every", type=int, default=250,
                        help="validate, save and pick up new shots every this many steps (default 250)")
    parser.add_argument("--seed", type=int, default=0, help="data order and noise seed (default 0)")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop (saved, resumable) after this long")
    parser.add_argument("--stop-at", type=int, default=None,
                        help="stop (validated, saved, resumable) at this step; the learning-rate schedule stays "
                             "the one of --steps")
    parser.set_defaults(func=_train)
