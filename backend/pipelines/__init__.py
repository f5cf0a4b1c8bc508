"""Sampling: the previs pipeline (bundle -> frames) and ``generate_shot`` (bundle -> mp4, PNGs, metrics)."""
