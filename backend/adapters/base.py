"""What every model family offers the backend: recognise its folder, say what it can do (read from its configs,
nothing loaded), and load into something that turns a shot bundle into frames.

New families come in as one module each (``backend.adapters.<family>``) with a ``ModelAdapter`` subclass listed in
``backend.adapters.ADAPTERS``; the generation entry point, the server and the CLI only talk to this interface.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

StepCallback = Callable[[int, int], None]  # (steps done, total steps); may raise to stop between steps


@dataclass(frozen=True)
class ModelCapabilities:
    """What a client needs to know to make a shot the model can generate, and to label the model in a picker."""

    family: str
    model_class: str
    reads_prompt: bool  # whether the prompt changes the clip (a text encoder)
    default_frames: int  # a sensible new shot's length for this model
    frame_rule: str  # "any": every length; "4k+1": generated at the next 4k+1 frames and cut back
    size_multiple: int  # generated at the next multiple of this and cropped back
    default_steps: int
    quantization: dict[str, Any] | None  # method, bits, bits_per_weight; None at full precision

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ModelAdapter(ABC):
    """One model family. ``recognises`` and ``capabilities`` read configs only; ``load`` loads the weights from the
    local folder (``local_files_only``: never the Hub)."""

    family: ClassVar[str]

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    @classmethod
    @abstractmethod
    def recognises(cls, folder: Path) -> bool:
        """True when ``folder`` is this family's model folder."""

    @abstractmethod
    def check(self) -> None:
        """Raise ValueError/FileNotFoundError naming what is missing or wrong, before anything is loaded."""

    @abstractmethod
    def capabilities(self) -> ModelCapabilities:
        """The model's capabilities, from its configs."""

    @abstractmethod
    def load(self, device: str = "cpu") -> LoadedModel:
        """The model on ``device``, ready to generate."""


class LoadedModel(ABC):
    """A loaded model: one call per shot."""

    default_steps: int

    @abstractmethod
    def generate(self, bundle, *, steps: int, seed: int, callback: StepCallback | None = None) -> np.ndarray:
        """(F, H, W, 3) float32 frames in [0, 1] at the bundle's frame count and resolution."""


def read_json(path: Path) -> dict[str, Any]:
    """A config file as a dict; a damaged one raises ValueError naming it."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError) as error:
        raise ValueError(f"{path} is not a readable JSON config ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object")
    return data


def quantization_of(folder: Path) -> dict[str, Any] | None:
    """Method, bits and bits per weight of a folder quantized by ``cinepregen quantize``; None if it is not."""
    from backend.quant.serialization import CONFIG_NAME

    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        return None
    quant = read_json(path)
    return {key: quant.get(key) for key in ("method", "bits", "bits_per_weight")}
