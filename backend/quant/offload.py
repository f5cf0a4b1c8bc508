"""One block at a time: calibrate (and run) a model whose blocks do not all fit where the work is done.

A 14B video DiT is 28 GB in bf16 and 56 GB in float32: it cannot sit on a 24 GB GPU, nor in float32 in a 64 GB
machine beside its calibration. `BlockOffload` keeps every transformer block where it was loaded (the CPU, in the
file's dtype) and brings one onto the compute device, in float32, only while it runs or is calibrated; the parts
outside the blocks (patch and condition embeddings, the output head: a few percent of the weights) live on the
device. A block that has been quantized comes back as packed codes and float32 codebooks and is only moved after
that, never cast (its codebooks must stay as calibrated).

Peak memory on the device is then the non-block parts, one block in float32 with its calibration state, and the
recorded block inputs; in host memory, the model in its stored dtype.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

TensorKey = tuple[int, str]  # (id of the owning module, tensor name): layers made since (quantized ones) are new


def _own_tensors(module: nn.Module):
    """(table, name, tensor, key) for each of the module's own parameters and buffers (not its children's)."""
    for table in (module._parameters, module._buffers):
        for name, tensor in list(table.items()):
            if tensor is not None:
                yield table, name, tensor, (id(module), name)


def _tensors(module: nn.Module):
    """`_own_tensors` of ``module`` and of all its children."""
    for owner in module.modules():
        yield from _own_tensors(owner)


def _place(tensors, device: torch.device, dtypes: dict[TensorKey, torch.dtype]) -> None:
    """Move the tensors (`_tensors` entries) to ``device`` in place (references to parameters stay valid); those
    named in ``dtypes`` are cast to their dtype there, the others keep theirs."""
    with torch.no_grad():
        for table, name, tensor, key in tensors:
            moved = tensor.data.to(device, dtypes.get(key))
            if isinstance(tensor, nn.Parameter):
                tensor.data = moved
            else:
                table[name] = moved


class BlockOffload:
    """Forward hooks that fetch each block to ``device`` before it runs and put it back on ``storage`` after, and
    `on_device(block)` to keep one there for a whole calibration. A block's own tensors go to the device in
    ``compute_dtype`` and come back in the dtype each had (a bf16 file keeps some norms and tables in float32);
    the layers that replace them (the quantized ones) are only moved. `upcast_leftovers()` puts what is left of
    the original tensors in ``compute_dtype`` for good (once every block is quantized they are small); `close()`
    removes the hooks and leaves every block on ``storage``."""

    def __init__(self, model: nn.Module, blocks: list[nn.Module], device: str | torch.device,
                 storage: str | torch.device = "cpu", compute_dtype: torch.dtype = torch.float32) -> None:
        self.blocks, self.device, self.storage, self.compute_dtype = blocks, torch.device(device), \
            torch.device(storage), compute_dtype
        self.stored: dict[int, dict[TensorKey, torch.dtype]] = {}
        self.pinned: set[int] = set()
        self.holder: dict[int, int] = {}  # block -> the module whose call fetched it
        in_blocks = {id(m) for block in blocks for m in block.modules()}
        outside = [m for m in model.modules() if id(m) not in in_blocks]
        for module in outside:  # the embeddings and the head: on the device, in the compute dtype
            own = list(_own_tensors(module))
            _place(own, self.device, {key: compute_dtype for _, _, t, key in own if t.is_floating_point()})
        for block in blocks:
            self.stored[id(block)] = {key: t.dtype for _, _, t, key in _tensors(block) if t.is_floating_point()}
            self._release(block)
        # on every module of a block, not only the block: a model may call a block's part directly (diffusers' DiT
        # runs transformer_blocks[0].norm1.emb for its output head); whichever call fetched the block releases it
        self.hooks = []
        for block in blocks:
            for module in block.modules():
                self.hooks.append(module.register_forward_pre_hook(
                    lambda module, args, block=block: self._enter(block, module)))
                self.hooks.append(module.register_forward_hook(
                    lambda module, args, output, block=block: self._exit(block, module)))

    def _enter(self, block: nn.Module, module: nn.Module) -> None:
        if id(block) not in self.pinned and id(block) not in self.holder:
            self._fetch(block)
            self.holder[id(block)] = id(module)

    def _exit(self, block: nn.Module, module: nn.Module) -> None:
        if self.holder.get(id(block)) == id(module) and id(block) not in self.pinned:
            self._release(block)

    def _fetch(self, block: nn.Module) -> None:
        _place(_tensors(block), self.device, dict.fromkeys(self.stored[id(block)], self.compute_dtype))

    def _release(self, block: nn.Module) -> None:
        self.holder.pop(id(block), None)
        live = {id(m) for m in block.modules()}  # forget the layers quantization replaced (their ids may be reused)
        self.stored[id(block)] = {key: dtype for key, dtype in self.stored[id(block)].items() if key[0] in live}
        _place(_tensors(block), self.storage, self.stored[id(block)])

    @contextmanager
    def on_device(self, block: nn.Module):
        """Keep ``block`` on the device (in float32) for everything inside: its capture, calibration, quantization."""
        self._fetch(block)
        self.holder.pop(id(block), None)
        self.pinned.add(id(block))
        try:
            yield block
        finally:
            self.pinned.discard(id(block))
            self._release(block)

    def upcast_leftovers(self) -> None:
        for block in self.blocks:
            _place(_tensors(block), self.storage, dict.fromkeys(self.stored[id(block)], self.compute_dtype))
            self.stored[id(block)] = {}

    def close(self) -> None:
        for handle in self.hooks:
            handle.remove()
        self.hooks = []


def to_device(value, device: torch.device):
    """``value`` (tensors, or tuples, lists and dicts of them) on ``device``."""
    if torch.is_tensor(value):
        return value.to(device)
    if isinstance(value, tuple | list):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value
