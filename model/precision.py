"""Precision modes of a training step (``TrainConfig.amp``).

- ``fp32``: fp32 tensors and fp32 matmuls.
- ``tf32``: fp32 tensors with TF32 matmuls on CUDA (``torch.backends.cuda.matmul.fp32_precision = "tf32"``, the
  API of torch >= 2.9; mixing it with the legacy ``allow_tf32`` flags is an error there). On CPU it is plain fp32.
- ``bf16``: bf16 autocast around the forward pass and the loss (CPU and CUDA); the loss terms are computed in fp32.
- ``auto``: ``tf32`` on CUDA, ``fp32`` on CPU. Why not bf16: the geometry stays fp32, since bf16's 8-bit mantissa
  rounds 0.5-1 m coordinates to 4-8 mm, the size of the details an SDF of a body must keep. This choice is
  provisional until a GPU run measures the accuracy and speed of the three modes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Literal

import torch

Mode = Literal["fp32", "tf32", "bf16"]


def resolve(amp: str, device: str) -> Mode:
    """The mode ``amp`` (a ``TrainConfig.amp`` value) means on ``device``."""
    cuda = device.startswith("cuda")
    if amp == "auto":
        return "tf32" if cuda else "fp32"
    if amp not in ("fp32", "tf32", "bf16"):
        raise ValueError(f"amp must be auto, fp32, tf32 or bf16, got {amp!r}")
    return amp  # type: ignore[return-value]


@contextmanager
def matmul_precision(mode: Mode, device: str) -> Iterator[None]:
    """TF32 matmuls inside the block when ``mode`` is tf32 on CUDA (forward and backward); the previous setting is
    restored on exit, so nothing else in the process is affected."""
    if mode != "tf32" or not device.startswith("cuda"):
        yield
        return
    matmul = torch.backends.cuda.matmul
    old = matmul.fp32_precision
    matmul.fp32_precision = "tf32"
    try:
        yield
    finally:
        matmul.fp32_precision = old


def autocast(mode: Mode, device: str):
    """The autocast context of the forward pass: bf16 for ``bf16``, none otherwise."""
    if mode != "bf16":
        return nullcontext()
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)
