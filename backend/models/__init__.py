"""The previs video DiT, its multi-masked IP-Adapter processor and the reference encoders."""

from backend.models.masked_ip_adapter import MaskedIPAttnProcessor, install_masked_ip
from backend.models.previs_dit import PRESETS, PrevisDiT
from backend.models.reference_encoder import CLIPReferenceAdapter, ReferenceEncoder

__all__ = ["PRESETS", "CLIPReferenceAdapter", "MaskedIPAttnProcessor", "PrevisDiT", "ReferenceEncoder",
           "install_masked_ip"]
