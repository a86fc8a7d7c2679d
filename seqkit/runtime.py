"""Where the work runs: device choice, mixed precision and seeding."""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import sys

import torch

from .errors import SeqkitError

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when a GPU is visible, else the CPU; other names are checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SeqkitError(f"train.device: {name} asked for, but PyTorch sees no CUDA GPU here (use auto or cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise SeqkitError(f"train.device: {name} asked for, but only {torch.cuda.device_count()} GPU(s) are visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise SeqkitError("train.device: mps asked for, but this PyTorch has no MPS backend here")
    return device


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for ``bf16`` / ``fp16``; a no-op context for ``fp32``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AUTOCAST_DTYPES[precision])


def seed_everything(seed: int) -> None:
    """Seed Python's and PyTorch's generators (all devices)."""
    random.seed(seed)
    torch.manual_seed(seed)


def tune_allocator() -> bool:
    """Keep large tensors on glibc's heap instead of fresh ``mmap`` pages.

    By default glibc serves every allocation above 32 MiB with ``mmap`` and returns it
    with ``munmap`` on free, so a language model's logits (batch x time x vocabulary
    floats, ~70 MB at batch 32, BPTT 35 and 16k words) are page-faulted in anew at every
    step: on 2 CPU cores that took a third of training time. Raising the mmap and trim
    thresholds lets freed blocks be reused. Linux with glibc only; the process keeps its
    peak heap instead of returning it to the system. ``SEQKIT_MALLOC_TUNING=0`` turns it off.

    Returns:
        Whether the allocator was tuned.
    """
    if not sys.platform.startswith("linux") or os.environ.get("SEQKIT_MALLOC_TUNING", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        return bool(
            libc.mallopt(m_mmap_threshold, 1 << 30)
            and libc.mallopt(m_trim_threshold, (1 << 31) - 1)
            and libc.mallopt(m_top_pad, 64 << 20)
        )
    except (OSError, AttributeError):  # not glibc (musl, ...): leave the allocator alone
        return False
