"""Post-training quantization of DiTs: VQ4DiT, its baselines, packed storage and the quantized linear layers."""

from backend.quant.baselines import UniformLinear
from backend.quant.serialization import is_quantized_folder, load_quantized, save_quantized, size_on_disk
from backend.quant.vq4dit import METHODS, QuantizedModelInfo, quantize_model
from backend.quant.vq_config import VQConfig, bits_to_vq_config
from backend.quant.vq_linear import PackedLinear, VQLinear, set_quantized_mode

__all__ = [
    "METHODS", "PackedLinear", "QuantizedModelInfo", "UniformLinear", "VQConfig", "VQLinear", "bits_to_vq_config",
    "is_quantized_folder", "load_quantized", "quantize_model", "save_quantized", "set_quantized_mode", "size_on_disk",
]
