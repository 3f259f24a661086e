"""Mixed precision (`trainer.precision=bf16-mixed|16-mixed`) on CPUs that lack reduced-precision
oneDNN kernels.

oneDNN's bf16 / fp16 LSTM needs AVX512-BF16 or AMX (bf16) and AVX512-FP16 or AMX-FP16 (fp16). On
other CPUs (e.g. plain AVX2) an LSTM under autocast fails with "could not create a primitive
descriptor for the LSTM forward propagation primitive". PyTorch's own kernels run it, so such a
run trains with oneDNN switched off. It works but is no faster than 32-true there: mixed precision
pays off on GPUs and on bf16-capable CPUs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytorch_lightning as pl
import torch
from pytorch_lightning.accelerators import CPUAccelerator


def cpu_lacks_onednn_kernels(precision: str) -> bool:
    """Whether `precision` (a Lightning precision string) autocasts to a dtype this CPU's oneDNN
    has no kernels for."""
    if "bf16" in precision:
        return not torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if precision.startswith("16"):
        return not torch.ops.mkldnn._is_mkldnn_fp16_supported()
    return False


@contextmanager
def cpu_mixed_precision(trainer: pl.Trainer) -> Iterator[None]:
    """Around `trainer.fit`: switch oneDNN off while a CPU run uses a precision it cannot serve."""
    needed = isinstance(trainer.accelerator, CPUAccelerator) and cpu_lacks_onednn_kernels(
        str(trainer.precision)
    )
    if not needed:
        yield
        return
    enabled = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = enabled
