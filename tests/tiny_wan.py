"""A tiny but real Wan 2.1 VACE pipeline folder, built offline from diffusers' and transformers' own classes (the
sizes of diffusers' tests, widened to 64 so that its block layers are big enough to quantize), saved with
``save_pretrained`` exactly as a downloaded model folder is laid out."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = "a the crate robot walks yard red blue night street dancer stage warm light".split()


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(["<pad>", "</s>", "<unk>", *WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=512)


def tiny_wan_vace_folder(folder: Path, seed: int = 0) -> Path:
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanVACEPipeline, WanVACETransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    transformer = WanVACETransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=32, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=128, num_layers=3, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32, vace_layers=[0, 2], vace_in_channels=96)
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(WORDS) + 3, d_model=32, d_ff=37, d_kv=8, num_layers=2,
                                               num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0,
                                               is_encoder_decoder=False))
    pipeline = WanVACEPipeline(transformer=transformer, vae=vae, text_encoder=text_encoder.eval(),
                               tokenizer=tiny_tokenizer(), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                               transformer_2=None)
    pipeline.save_pretrained(folder)
    (Path(folder) / "cinepregen.json").write_text('{"num_inference_steps": 2, "guidance_scale": 3.0}\n')
    return Path(folder)
