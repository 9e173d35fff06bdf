"""Counting host-device syncs: the operators that make the host wait for the device.

    with SyncCounter() as counter:
        trainer.training_step(batch)
    counter.ops        # e.g. ['aten.nonzero.default']

A dispatch mode that records value reads (.item(), bool(tensor), float(tensor): `_local_scalar_dense`,
`is_nonzero`, `equal`), operators whose output shape depends on the data (nonzero, masked_select, unique,
repeat_interleave without a size, bincount, which reads its maximum on CUDA) and indexing with a boolean mask
(which runs nonzero). It sees what runs on the calling thread, on any device, so the CPU test suite checks the
sync-freedom that matters on GPUs (tests/test_engine.py); on a GPU, torch.cuda.set_sync_debug_mode is the other
check (benchmarks/gpu_check.py).
"""
from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


class SyncCounter(TorchDispatchMode):
    SYNC = {aten._local_scalar_dense, aten.nonzero, aten.masked_select, aten.is_nonzero, aten.equal, aten._unique2,
            aten.unique_dim, aten.unique_consecutive, aten.repeat_interleave, aten.bincount}

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        if packet in self.SYNC:
            self.ops.append(str(func))
        elif packet in (aten.index, aten.index_put, aten.index_put_):
            indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices):
                self.ops.append(f"{func} with a boolean mask")
        return func(*args, **kwargs)
