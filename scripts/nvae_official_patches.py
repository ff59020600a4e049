"""Run-time patches that let the official NVlabs/NVAE code run in one process, on CPU or on one GPU.

Imported by interpreters that have torch (`benchmarks/bench_nvae.py`'s peer worker,
`scripts/make_nvae_parity_fixture.py`); nothing in the kexue packages imports it. The official checkout
stays outside this repository and is never edited: `patch(src)` (CPU) and `patch_cuda(src, rendezvous)`
(one GPU) put it on `sys.path` and patch modules in memory.

Both: `tensorboardX` (imported by its utils.py) becomes a stub whose writer ignores every call.

`patch_cuda` changes nothing else: the official fused sync-BN+Swish layer runs as in `train.py`, in a
one-process `torch.distributed` group (gloo), where it takes its own no-sync branch (`F.batch_norm` and
its memory-saving Swish).

`patch`, for CPU, also:
- `torch.Tensor.cuda` and `nn.Module.cuda` (hard-coded `.cuda()` calls) return their argument;
- the fused sync-BN+Swish layer (`thirdparty.inplaced_sync_batchnorm.SyncBatchNormSwish`, CUDA-only) becomes
  `nn.BatchNorm2d` followed by SiLU, the same maths in one process;
- `neural_operations.SYNC_BN = False`: plain `nn.BatchNorm2d`, which is what SyncBN computes in one process.
"""

from __future__ import annotations

import sys
import types


class NoWriter:
    """A stand-in for tensorboardX's SummaryWriter and NVAE's `utils.Writer`: every method does nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _stub_tensorboardx(src: str) -> None:
    """Puts the checkout at `src` first on `sys.path` and a do-nothing `tensorboardX` in `sys.modules`."""
    sys.path.insert(0, src)
    tbx = types.ModuleType("tensorboardX")
    tbx.SummaryWriter = NoWriter  # type: ignore[attr-defined]
    sys.modules.setdefault("tensorboardX", tbx)


def patch_cuda(src: str, rendezvous: str):
    """The checkout at `src` on one GPU, as one process of `train.py`'s distributed group (world size 1, gloo,
    file rendezvous at `rendezvous`, a path that does not exist yet); returns `(model, utils, distributions)`."""
    _stub_tensorboardx(src)
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=0, world_size=1)
    import distributions
    import model
    import utils

    return model, utils, distributions


def patch(src: str):
    """Applies the CPU patches for the checkout at `src`; returns its `(model, utils, distributions)` modules."""
    _stub_tensorboardx(src)

    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]

    import thirdparty  # the official checkout's package

    class SyncBatchNormSwish(nn.BatchNorm2d):
        def forward(self, x):
            return F.silu(super().forward(x))

    stub = types.ModuleType("thirdparty.inplaced_sync_batchnorm")
    stub.SyncBatchNormSwish = SyncBatchNormSwish  # type: ignore[attr-defined]
    sys.modules["thirdparty.inplaced_sync_batchnorm"] = stub
    thirdparty.inplaced_sync_batchnorm = stub

    import neural_operations

    neural_operations.SYNC_BN = False
    import distributions
    import model
    import utils

    return model, utils, distributions
