"""VQ4DiT's calibration of one block: candidate sets of nearest codewords with learnable softmax ratios
(`SoftVQLinear`), k-means codebooks (one a layer or shared by a block's layers of one shape), and the loop that pulls
the block's quantized output towards the full-precision one while `L_r = mean(1 - |2r - 1|)` pushes each ratio
vector to one-hot (`calibrate_block`). A sub-vector whose top ratio passes the threshold is frozen to that candidate;
at the end every sub-vector takes its highest-ratio candidate, which is ordinary VQ storage (`VQLinear`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from backend.quant.capture import BlockSample, block_output, relative_mse
from backend.quant.kmeans import kmeans, nearest_codewords
from backend.quant.vq_config import VQConfig
from backend.quant.vq_linear import VQLinear, tie_codebooks


def candidate_sets(subvectors: torch.Tensor, codebook: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sub-vector's n nearest codewords (N, n), closest first, and their squared distances (N, n)."""
    return nearest_codewords(subvectors, codebook, n)


def soft_reconstruction(codebook: torch.Tensor, candidates: torch.Tensor, ratios: torch.Tensor) -> torch.Tensor:
    """Sub-vectors (N, d) as ratio-weighted averages of their candidates: sum_j r_ij * codebook[c_ij]."""
    return (ratios.unsqueeze(-1) * codebook[candidates]).sum(1)


def one_hot_regularizer(ratios: torch.Tensor) -> torch.Tensor:
    """L_r = mean(1 - |2r - 1|): zero exactly when every ratio is 0 or 1."""
    return (1 - (2 * ratios - 1).abs()).mean()


class SoftVQLinear(nn.Module):
    """A linear layer during calibration: learnable codebook, candidate logits and bias; frozen rows are one-hot.
    The codebook is fit by k-means to this layer's sub-vectors unless a (shared) one is given."""

    def __init__(self, linear: nn.Linear, config: VQConfig, n: int, codebook: nn.Parameter | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("row_scale", row_scale(linear, config))  # (out,) or None
        subvectors = scaled_subvectors(linear, self.row_scale, config.d)  # (N, d)
        codebook = codebook if codebook is not None else kmeans_codebook([linear], config)
        candidates, distances = candidate_sets(subvectors, codebook.detach(), n)
        if config.ratio_init == "uniform":
            logits = torch.zeros_like(distances)
        else:
            # softmax(-log |w - c|) = ratios proportional to the inverse Euclidean distance (distances are squared)
            logits = -0.5 * torch.log(distances + 1e-12 * distances.mean() + 1e-30)
        self.codebook = codebook  # (k, d)
        self.logits = nn.Parameter(logits)  # (N, n)
        self.register_buffer("candidates", candidates)  # (N, n) codeword indices
        self.register_buffer("frozen", torch.zeros(len(candidates), dtype=torch.bool))
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=config.calibrate_bias)

    @property
    def hard(self) -> bool:
        return bool(self.frozen.all())

    def ratios(self) -> torch.Tensor:
        ratios = self.logits.softmax(-1)
        if self.frozen.any():
            one_hot = F.one_hot(self.logits.argmax(-1), ratios.shape[1]).to(ratios.dtype)
            ratios = torch.where(self.frozen.unsqueeze(1), one_hot, ratios)
        return ratios

    def weight(self) -> torch.Tensor:
        weight = soft_reconstruction(self.codebook, self.candidates, self.ratios()).view(self.out_features, -1)
        return weight if self.row_scale is None else weight * self.row_scale.unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight().to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    @torch.no_grad()
    def update_frozen(self, threshold: float, fraction: float) -> None:
        self.frozen |= self.logits.softmax(-1).amax(-1) >= threshold
        if self.frozen.float().mean() >= fraction:
            self.frozen.fill_(True)

    def to_vq_linear(self) -> VQLinear:
        assignments = self.candidates.gather(1, self.logits.argmax(-1, keepdim=True)).squeeze(1)
        bias = None if self.bias is None else self.bias.detach()
        return VQLinear.from_assignments(assignments, self.codebook.detach().half(), bias, self.in_features,
                                         row_scale=self.row_scale)


def row_scale(linear: nn.Linear, config: VQConfig) -> torch.Tensor | None:
    """Each output row's RMS (fp16-exact, never zero) when the rows' RMS spans more than `row_scale_spread`."""
    rms = linear.weight.detach().float().pow(2).mean(1).sqrt()
    if config.row_scale_spread is None or rms.max() <= config.row_scale_spread * rms.min():
        return None
    return rms.clamp_min(rms.max() * 1e-4).half().float()


def scaled_subvectors(linear: nn.Linear, scale: torch.Tensor | None, d: int) -> torch.Tensor:
    """The weight's sub-vectors (N, d), rows divided by their scale (`row_scale`) where there is one."""
    weight = linear.weight.detach().float()
    return (weight if scale is None else weight / scale.unsqueeze(1)).reshape(-1, d)


def kmeans_codebook(linears: list[nn.Linear], config: VQConfig) -> nn.Parameter:
    """A learnable codebook (k, d), k-means on the (scaled) sub-vectors of all the given layers."""
    subvectors = torch.cat([scaled_subvectors(linear, row_scale(linear, config), config.d) for linear in linears])
    return nn.Parameter(kmeans(subvectors, config.k, config.kmeans_iterations, seed=config.seed,
                               tol=config.kmeans_tol)[0])


def soft_vq_layers(linears: dict[str, nn.Linear], config: VQConfig, n: int) -> dict[str, SoftVQLinear]:
    """Calibration layers for one block's linears: a k-means codebook each, or with `share_codebooks` one for every
    weight shape, fit to the sub-vectors of all the layers of that shape."""
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for name, linear in linears.items():
        by_shape.setdefault(tuple(linear.weight.shape) if config.share_codebooks else (id(linear),), []).append(name)
    soft = {}
    for names in by_shape.values():
        codebook = kmeans_codebook([linears[name] for name in names], config)
        soft.update({name: SoftVQLinear(linears[name], config, n, codebook) for name in names})
    return {name: soft[name] for name in linears}


def hard_vq_layers(soft: dict[str, SoftVQLinear]) -> dict[str, VQLinear]:
    """The final `VQLinear`s; layers that shared a codebook in calibration share one tensor (`tie_codebooks`)."""
    hard = {name: layer.to_vq_linear() for name, layer in soft.items()}
    sharing: dict[int, list[VQLinear]] = {}
    for name, layer in soft.items():
        sharing.setdefault(id(layer.codebook), []).append(hard[name])
    for layers in sharing.values():
        tie_codebooks(layers)
    return hard



def regularizer_weight(config: VQConfig, step: int, steps: int) -> float:
    progress = step / max(steps - 1, 1)
    if config.reg_schedule == "constant":
        return config.reg_weight
    if config.reg_schedule == "linear":
        return config.reg_weight * progress
    return config.reg_weight * 0.5 * (1 - math.cos(math.pi * progress))


def calibrate_block(
    block: nn.Module, layers: dict[str, SoftVQLinear], samples: list[BlockSample], config: VQConfig,
    train_assignments: bool = True,
) -> None:
    """Minimise the block's relative output MSE over codebooks, biases and (VQ4DiT) candidate ratios."""
    codebook_params = {id(p): p for layer in layers.values() for p in (layer.codebook, layer.bias) if p is not None}
    codebook_params = [p for p in codebook_params.values() if p.requires_grad]  # a shared codebook once
    groups = [{"params": codebook_params, "lr": config.lr_codebook}]
    if train_assignments:
        groups.append({"params": [layer.logits for layer in layers.values()], "lr": config.lr_logits})
    else:
        for layer in layers.values():
            layer.frozen.fill_(True)
    optimizer = (torch.optim.RMSprop if config.optimizer == "rmsprop" else torch.optim.Adam)(groups)
    generator = torch.Generator().manual_seed(config.seed)
    harden_step = int(config.harden_at * config.iterations)
    for step in range(config.iterations):
        if step == harden_step:
            for layer in layers.values():
                layer.frozen.fill_(True)
        sample = samples[int(torch.randint(len(samples), (1,), generator=generator))]
        loss = config.distill_weight * relative_mse(block_output(block, sample), sample[2])
        soft = [layer for layer in layers.values() if not layer.hard]
        if train_assignments and soft:
            ratios = torch.cat([layer.ratios().reshape(-1) for layer in soft])
            loss = loss + regularizer_weight(config, step, harden_step) * one_hot_regularizer(ratios)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.codebook_training == "after_freeze":
            for layer in soft:
                layer.codebook.grad = None
        optimizer.step()
        for layer in layers.values():
            layer.update_frozen(config.freeze_threshold, config.freeze_fraction)

