"""Evaluation of generated previs clips against ground truth from the engine (no pretrained networks)."""
