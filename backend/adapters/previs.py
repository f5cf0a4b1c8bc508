"""Our own PrevisPipeline folders (``backend/weights/previs-*``, ``cinepregen train``, ``cinepregen quantize``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from backend.adapters.base import LoadedModel, ModelAdapter, ModelCapabilities, StepCallback, quantization_of, read_json

DEFAULT_FRAMES = 48  # 2 s at 24 fps; any length is generated, in overlapping windows past the model's window


class PrevisAdapter(ModelAdapter):
    family = "previs"

    @classmethod
    def recognises(cls, folder: Path) -> bool:
        config = Path(folder) / "transformer" / "config.json"
        try:
            return config.is_file() and read_json(config).get("_class_name") == "PrevisDiT"
        except ValueError:
            return False

    def check(self) -> None:
        from backend.pipelines.previs_folder import check_weights, check_weights_folder

        check_weights_folder(self.folder)
        check_weights(self.folder)

    def capabilities(self) -> ModelCapabilities:
        from backend.pipelines.previs_folder import read_sampling

        self.check()
        config = read_json(self.folder / "transformer" / "config.json")
        sampling = read_sampling(self.folder)
        return ModelCapabilities(
            family=self.family, model_class="PrevisDiT", reads_prompt=False, default_frames=DEFAULT_FRAMES,
            frame_rule="any", size_multiple=int(config.get("patch_size", 8)),
            default_steps=int(sampling["num_inference_steps"]),
            quantization=quantization_of(self.folder / "transformer"))

    def load(self, device: str = "cpu") -> LoadedPrevis:
        from backend.pipelines.previs_pipeline import PrevisPipeline

        return LoadedPrevis(PrevisPipeline.from_pretrained(self.folder, device=device))


class LoadedPrevis(LoadedModel):
    def __init__(self, pipeline):
        self.pipeline = pipeline
        self.default_steps = int(pipeline.sampling["num_inference_steps"])

    def generate(self, bundle, *, steps: int, seed: int, callback: StepCallback | None = None) -> np.ndarray:
        return self.pipeline(bundle, num_inference_steps=steps, seed=seed, callback=callback)
