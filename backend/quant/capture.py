"""Recording what the blocks of a model see: hooks on its blocks while the full-precision model runs on calibration
inputs, and the block inputs VQ4DiT calibrates each block on (``CapturedBlockInputs`` for any model, or
``StreamedBlockInputs`` one block at a time when the blocks form a chain). ``backend.quant.vq4dit`` calibrates on
them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # the calibration settings; only their seed and sample counts are read here
    from backend.quant.vq_config import VQConfig

BlockSample = tuple[tuple, dict, torch.Tensor]  # (args, kwargs, full-precision output) of one block call


def find_blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a DiT in the order a forward runs them: Wan VACE's `vace_blocks` (their hints feed
    the main blocks), then `transformer_blocks` (diffusers) or `blocks` (DiT, Wan)."""
    found = []
    for name in ("vace_blocks", "transformer_blocks", "blocks"):
        blocks = getattr(model, name, None)
        if isinstance(blocks, nn.ModuleList | Sequence) and len(blocks):
            found += list(blocks)
            if name != "vace_blocks":
                return found
    raise ValueError("model has no `transformer_blocks` or `blocks`; pass the list of blocks explicitly")


def replace_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)


def _tensors(output) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, tuple | list):
        return [t for item in output for t in _tensors(item)]
    if isinstance(output, dict):
        return [t for item in output.values() for t in _tensors(item)]
    return []


def _clone(value):
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, tuple | list):
        return type(value)(_clone(v) for v in value)
    if isinstance(value, dict):
        return {key: _clone(v) for key, v in value.items()}
    return value


class _StopForward(Exception):
    """Raised by a hook to end a forward once what it records is recorded."""


@torch.no_grad()
def capture_block_samples(
    model: nn.Module, blocks: list[nn.Module], make_calibration_inputs: Callable[[], dict], count: int,
    stop_after: bool = False,
) -> list[list[BlockSample]]:
    """Run the full-precision model `count` times and record every block's (args, kwargs, output) per run; with
    `stop_after`, each forward ends once the last of `blocks` has run (what comes after is not needed)."""
    samples: list[list[BlockSample]] = [[] for _ in blocks]
    pending: dict[int, tuple] = {}

    def make_hooks(index: int):
        def pre_hook(module, args, kwargs):
            pending[index] = (_clone(args), _clone(kwargs))

        def post_hook(module, args, kwargs, output):
            samples[index].append((*pending.pop(index), torch.cat([t.detach().reshape(-1) for t in _tensors(output)])))
            if stop_after and index == len(blocks) - 1:
                raise _StopForward

        return pre_hook, post_hook

    handles = []
    for index, block in enumerate(blocks):
        pre_hook, post_hook = make_hooks(index)
        handles.append(block.register_forward_pre_hook(pre_hook, with_kwargs=True))
        handles.append(block.register_forward_hook(post_hook, with_kwargs=True))
    try:
        for _ in range(count):
            with contextlib.suppress(_StopForward):
                model(**make_calibration_inputs())
    finally:
        for handle in handles:
            handle.remove()
    return samples


def block_output(block: nn.Module, sample: BlockSample) -> torch.Tensor:
    args, kwargs, _ = sample
    return torch.cat([t.reshape(-1) for t in _tensors(block(*args, **kwargs))])


def relative_mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(output, target) / target.pow(2).mean().clamp_min(1e-30)


@torch.no_grad()
def block_output_error(block: nn.Module, samples: list[BlockSample]) -> float:
    """Mean relative MSE between this block's output and the recorded full-precision output."""
    return sum(relative_mse(block_output(block, s), s[2]).item() for s in samples) / max(len(samples), 1)


def quantized_path_inputs(model: nn.Module, block: nn.Module, make_calibration_inputs: Callable[[], dict],
                          samples: list[BlockSample], seed: int) -> list[BlockSample]:
    """The block's inputs in the same calibration calls run again through the model as quantized so far, paired
    with the full-precision outputs recorded first. Works for any model; costs a forward up to the block per call
    (the blocks after it do not run, so an offloaded model fetches none of them)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        rerun = capture_block_samples(model, [block], make_calibration_inputs, len(samples), stop_after=True)[0]
    return [(args, kwargs, target) for (args, kwargs, _), (_, _, target) in zip(rerun, samples, strict=True)]


@torch.no_grad()
def capture_first_block_inputs(model: nn.Module, block: nn.Module, make_calibration_inputs: Callable[[], dict],
                               count: int) -> list[tuple[tuple, dict]]:
    """The first block's (args, kwargs) in `count` calls of the model; each forward stops there."""
    inputs: list[tuple[tuple, dict]] = []

    def pre_hook(module, args, kwargs):
        inputs.append((_clone(args), _clone(kwargs)))
        raise _StopForward

    handle = block.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        for _ in range(count):
            with contextlib.suppress(_StopForward):
                model(**make_calibration_inputs())
    finally:
        handle.remove()
    return inputs


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(map(_equal, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[key], b[key]) for key in a)
    return a == b


def forms_chain(samples: list[list[BlockSample]]) -> bool:
    """Whether, in a full-precision capture, each block's first input is exactly the output of the block before and
    its other inputs are the first block's (a plain chain under shared conditioning, as in DiT), so that every
    block's inputs follow from the first block's (`StreamedBlockInputs`)."""
    return all(
        len(args) > 0 and isinstance(args[0], torch.Tensor) and torch.equal(args[0].reshape(-1), before[2])
        and _equal(args[1:], first_args[1:]) and _equal(kwargs, first_kwargs)
        for previous, current in zip(samples[:-1], samples[1:], strict=True)
        for (args, kwargs, _), before, (first_args, first_kwargs, _) in zip(current, previous, samples[0], strict=True))


def _seeded_captures(capture: Callable[[int], list], config: VQConfig) -> tuple[list, list, torch.Tensor]:
    """The calibration calls and the held-out calls after them from the seed, and the random state the held-out
    calls start from (the calibration calls themselves when there are no held-out ones)."""
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        calibration = capture(config.calibration_samples)
        held_out_rng = torch.get_rng_state()
        held_out = capture(config.eval_samples)
    if not config.eval_samples:
        return calibration, calibration, torch.Generator().manual_seed(config.seed).get_state()
    return calibration, held_out, held_out_rng


class CapturedBlockInputs:
    """Every block's samples from one full-precision capture of all blocks, for any model. A block's quantized-path
    inputs (`sequential`) come from running the calibration calls again through the model as quantized so far, a
    whole forward a call. Holds every block's calls at once."""

    def __init__(self, model: nn.Module, blocks: list[nn.Module], make_calibration_inputs: Callable[[], dict],
                 config: VQConfig, sequential: bool) -> None:
        self.model, self.make_calibration_inputs, self.seed, self.sequential = (
            model, make_calibration_inputs, config.seed, sequential)
        self.calibration, self.held_out, self.held_out_rng = _seeded_captures(
            lambda count: capture_block_samples(model, blocks, make_calibration_inputs, count), config)

    def block_samples(self, index: int, block: nn.Module) -> tuple[list[BlockSample], list[BlockSample]]:
        """This block's calibration samples (on the quantized path when sequential) and held-out samples."""
        calibration = self.calibration[index]
        if self.sequential and index > 0:
            calibration = quantized_path_inputs(self.model, block, self.make_calibration_inputs, calibration, self.seed)
        return calibration, self.held_out[index]

    def advance(self, block: nn.Module) -> None:
        """Called once the block is quantized; nothing to do when every block's calls were recorded."""


class StreamedBlockInputs:
    """Block samples for blocks that form a chain (`forms_chain`), made one block at a time: only the first block's
    inputs are recorded (each calibration forward stops there); a block's full-precision targets are its outputs
    before it is quantized, which are also the next block's full-precision inputs, and its quantized-path inputs
    (`sequential`) are the quantized block before's outputs on its own. Memory holds one block's calls instead of
    every block's, and each call costs one block forward per block instead of a whole model forward."""

    def __init__(self, model: nn.Module, blocks: list[nn.Module], make_calibration_inputs: Callable[[], dict],
                 config: VQConfig, sequential: bool) -> None:
        self.sequential = sequential
        self.calibration, self.held_out, self.held_out_rng = _seeded_captures(
            lambda count: capture_first_block_inputs(model, blocks[0], make_calibration_inputs, count), config)
        self.quantized_path = [args for args, _ in self.calibration]
        self.targets: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])

    @torch.no_grad()
    def block_samples(self, index: int, block: nn.Module) -> tuple[list[BlockSample], list[BlockSample]]:
        """Call while the block is still in full precision."""
        self.targets = tuple([block_output(block, (*inputs, None)) for inputs in calls]
                             for calls in (self.calibration, self.held_out))
        calibration_inputs = self.quantized_path if self.sequential else [args for args, _ in self.calibration]
        calibration = [(args, kwargs, target) for args, (_, kwargs), target
                       in zip(calibration_inputs, self.calibration, self.targets[0], strict=True)]
        held_out = [(*inputs, target) for inputs, target in zip(self.held_out, self.targets[1], strict=True)]
        return calibration, held_out

    @torch.no_grad()
    def advance(self, block: nn.Module) -> None:
        """Called once the block is quantized: move every path on to the next block's inputs."""
        if self.sequential:
            self.quantized_path = [(block_output(block, (args, kwargs, None)).view_as(args[0]), *args[1:])
                                   for args, (_, kwargs) in zip(self.quantized_path, self.calibration, strict=True)]
        self.calibration, self.held_out = (
            [((target.view_as(args[0]), *args[1:]), kwargs)
             for (args, kwargs), target in zip(calls, targets, strict=True)]
            for calls, targets in zip((self.calibration, self.held_out), self.targets, strict=True))


def block_inputs(model: nn.Module, blocks: list[nn.Module], make_calibration_inputs: Callable[[], dict],
                 config: VQConfig, sequential: bool) -> CapturedBlockInputs | StreamedBlockInputs:
    """Streamed block inputs when one probe call shows the blocks form a chain (and `config.stream_inputs`), else
    a capture of every block."""
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        chain = config.stream_inputs and forms_chain(capture_block_samples(model, blocks, make_calibration_inputs, 1))
    return (StreamedBlockInputs if chain else CapturedBlockInputs)(
        model, blocks, make_calibration_inputs, config, sequential)
