"""Zero-data calibration inputs for any diffusers transformer, from its own config.

VQ4DiT calibrates with no data: the full-precision model runs on noise with random conditions and its blocks'
inputs and outputs are recorded. What "random conditions" means depends on the model; every diffusers transformer
says it in its config, under a few names: the latent channels (``in_channels``), the latent size (``sample_size``,
or a small video latent when the patch is 3-D as in Wan), the class count of a class-conditional DiT
(``num_embeds_ada_norm``), the text-embedding width (``text_dim``, ``cross_attention_dim``, ``caption_channels``,
``joint_attention_dim``), pooled projections, Wan I2V's image embeddings (``image_dim``) and Wan VACE's control
latents (``vace_in_channels``). ``config_calibration_inputs`` builds one forward's keyword arguments from those,
for the parameters of the model's ``forward`` that need a value; a model with another required input is named in
a ValueError. Models of our own provide ``make_calibration_inputs(model, batch_size, ...)`` in their module instead
(``backend.models.previs_dit``).

Inputs are Gaussian noise at a uniformly sampled timestep (the noise level then does not matter to the blocks'
linear layers' input statistics, which is what the codebooks are fitted to), not the model's own sampling
trajectory: on our previs model, trajectory inputs under random conditions calibrated worse (see
``backend.models.previs_dit.make_calibration_inputs``).
"""

from __future__ import annotations

import inspect

import torch

VIDEO_LATENT = (3, 12, 16)  # latent frames, height, width of a video model's calibration input (9 frames, 96x128)
TEXT_TOKENS = 32
IMAGE_TOKENS = 257  # Wan I2V's CLIP image tokens


def _text_width(config: dict) -> int | None:
    for key in ("text_dim", "cross_attention_dim", "caption_channels", "joint_attention_dim"):
        if config.get(key):
            return int(config[key])
    return None


def _latent_shape(config: dict) -> tuple[int, ...]:
    patch = config.get("patch_size")
    if isinstance(patch, list | tuple) and len(patch) == 3:  # a video DiT: (C, F, H, W)
        return (int(config.get("in_channels", 16)), *VIDEO_LATENT)
    size = config.get("sample_size", 32)
    height, width = (size, size) if isinstance(size, int) else size
    if config.get("num_frames"):
        return (int(config.get("in_channels", 4)), int(config["num_frames"]), height, width)
    return (int(config.get("in_channels", 4)), height, width)


def config_calibration_inputs(model, batch_size: int) -> dict:
    """One forward's keyword arguments for ``model``: noise, a timestep and random conditions shaped by its config."""
    config = dict(model.config)
    latent = _latent_shape(config)
    text_width = _text_width(config)
    timesteps = int(config.get("num_train_timesteps", 1000))
    classes = config.get("num_embeds_ada_norm") or config.get("num_classes")
    makers = {
        "hidden_states": lambda: torch.randn(batch_size, *latent),
        "timestep": lambda: torch.randint(0, timesteps, (batch_size,)),
        "encoder_hidden_states": (lambda: torch.randn(batch_size, TEXT_TOKENS, text_width)) if text_width else None,
        "class_labels": (lambda: torch.randint(0, int(classes), (batch_size,))) if classes else None,
        "control_hidden_states": (lambda: torch.randn(batch_size, int(config["vace_in_channels"]), *latent[1:]))
        if config.get("vace_in_channels") else None,
        "encoder_hidden_states_image": (lambda: torch.randn(batch_size, IMAGE_TOKENS, int(config["image_dim"])))
        if config.get("image_dim") else None,
        "pooled_projections": (lambda: torch.randn(batch_size, int(config["pooled_projection_dim"])))
        if config.get("pooled_projection_dim") else None,
    }
    makers["sample"] = makers["hidden_states"]
    kwargs = {}
    parameters = inspect.signature(model.forward).parameters
    for name, parameter in parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if makers.get(name) is not None:
            kwargs[name] = makers[name]()
        elif parameter.default is parameter.empty:
            raise ValueError(f"cannot make a calibration input for {type(model).__name__}.forward({name}=...) from "
                             "its config; give the model's module a make_calibration_inputs(model, batch_size)")
    if "return_dict" in parameters:
        kwargs["return_dict"] = False
    return kwargs
