"""Where the work runs: device choice, CPU threads, mixed precision and seeding."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from .errors import RecipeError, SeqkitError

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


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


@dataclass(frozen=True)
class Threads:
    """How many CPU threads torch computes with, and why."""

    requested: str  # auto | a number
    chosen: int
    reason: str

    def describe(self) -> str:
        """``threads: auto -> 1 (2 cores, 1 kept busy by other processes)``"""
        return f"threads: {self.requested} -> {self.chosen} ({self.reason})"


def choose_threads(requested: int | str | None = "auto") -> Threads:
    """Set the number of threads torch computes with on the CPU, and say why.

    A number is used as it is. ``auto`` leaves a count the user set in ``OMP_NUM_THREADS``
    alone; otherwise it takes the cores this process may run on (its CPU affinity and
    cgroup quota) less those other processes keep busy (the 1-minute load average): a
    recurrent network's many small steps each wait for the slowest thread, so a thread
    sharing its core with another job slows every step (``seqkit eval`` on 2 cores with
    one other job: 45 s with 2 threads, 8 s with 1).
    """
    if requested not in (None, "auto"):
        torch.set_num_threads(int(requested))
        return Threads(str(requested), int(requested), "as asked")
    if os.environ.get("OMP_NUM_THREADS"):
        return Threads("auto", torch.get_num_threads(), "set by OMP_NUM_THREADS")
    cores = usable_cores()
    busy = min(cores - 1, max(0, round(os.getloadavg()[0]))) if hasattr(os, "getloadavg") else 0
    torch.set_num_threads(cores - busy)
    reason = f"{cores} core{'s' if cores != 1 else ''}" + (f", {busy} kept busy by other processes" if busy else "")
    return Threads("auto", cores - busy, reason)


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity, within a cgroup CPU quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    return max(1, cores)


@dataclass(frozen=True)
class Precision:
    """What ``train.precision`` asked for, what training uses, and why."""

    requested: str  # auto | fp32 | bf16 | fp16
    chosen: str  # fp32 | bf16 | fp16
    reason: str

    def describe(self) -> str:
        """``precision: auto -> fp32 (this CPU has no native bf16)``"""
        return f"precision: {self.requested} -> {self.chosen} ({self.reason})"


def resolve_precision(requested: str, device: torch.device, cells: Iterable[str] = ("lstm",)) -> Precision:
    """Decide the precision training runs in, from what the device can do.

    ``auto`` is bf16 where the device runs it natively -- a CUDA GPU with bf16 tensor
    cores, or a CPU with AVX-512 BF16 or AMX (read from the CPU's feature flags, not its
    name) whose oneDNN runs the recipe's recurrent cell in bf16 -- and fp32 elsewhere. An
    explicit ``bf16`` or ``fp16`` the device cannot run is refused here, before any work,
    rather than failing inside the first step with a kernel error.

    Args:
        requested: ``train.precision``.
        device: where training runs.
        cells: the recurrent cells the model runs (``rnn``, ``gru``, ``lstm``): oneDNN
            has bf16 kernels for some cells on CPUs where it has none for others.

    Raises:
        RecipeError: ``bf16`` or ``fp16`` asked for on a device that cannot run it.
    """
    if requested == "fp32":
        return Precision(requested, "fp32", "as the recipe asks")
    if requested == "fp16":
        if device.type != "cuda":
            raise RecipeError([f"train.precision: fp16 needs CUDA, and training runs on {device}; set train.precision: auto (or fp32)"])
        return Precision(requested, "fp16", "as the recipe asks, with a gradient scaler")
    native, hardware = _native_bf16(device)
    if requested == "auto" and not native:
        return Precision(requested, "fp32", f"{hardware} has no native bf16")
    problem = next(filter(None, (_bf16_problem(device, cell) for cell in sorted(set(cells)))), None)
    if problem is not None:
        if requested == "auto":
            return Precision(requested, "fp32", f"{hardware} has native bf16, but {problem}")  # an old oneDNN
        raise RecipeError([f"train.precision: bf16 cannot run here: {problem}; set train.precision: auto (bf16 only where it runs) or fp32"])
    if requested == "auto":
        return Precision(requested, "bf16", f"{hardware} has native bf16")
    if not native:
        return Precision(requested, "bf16", f"as the recipe asks; {hardware} has no native bf16, so it is emulated and may be slower than fp32")
    return Precision(requested, "bf16", f"as the recipe asks; {hardware} has native bf16")


def _native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether the device multiplies bf16 in hardware, and what to call the device."""
    if device.type == "cuda":
        try:
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch before 2.3 has no including_emulation
            native = torch.cuda.is_bf16_supported()
        return native, "this GPU"
    if device.type == "cpu":
        capabilities = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
        return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16")), "this CPU"
    return False, f"{device.type}"


@functools.cache
def _bf16_problem(device: torch.device, cell: str) -> str | None:
    """Why a bf16 forward and backward pass of a small ``cell`` fails on ``device``
    (``None``: it runs). Tried once per process, device and cell, without touching the
    random number generators (training is seeded already)."""
    gpus = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=gpus):
        module = _CELLS[cell](8, 8, batch_first=True, bidirectional=True).to(device)
        inputs, weight = torch.randn(2, 3, 8, device=device), torch.randn(4, 16, device=device)
        try:
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):  # padded input, then packed: two kernels
                packed = nn.utils.rnn.pack_padded_sequence(inputs, torch.tensor([3, 2]), batch_first=True)
                states = module(inputs)[0] + nn.utils.rnn.pad_packed_sequence(module(packed)[0], batch_first=True, total_length=3)[0]
                loss = nn.functional.linear(states, weight).float().sum()
            loss.backward()
        except RuntimeError as error:
            first_sentence = (str(error).strip() or type(error).__name__).splitlines()[0].split(". ")[0].rstrip(".")
            name = {"rnn": "an RNN", "gru": "a GRU", "lstm": "an LSTM"}[cell]
            return f"PyTorch cannot run {name} in bf16 on this {'GPU' if device.type == 'cuda' else 'CPU'} ({first_sentence})"
    return None


def describe_cpu() -> str:
    """This CPU in a phrase for speed figures: its model name (and, where a hypervisor
    shows only the vendor's name, family and model numbers), its widest vector unit and
    whether it multiplies bf16 natively, e.g. ``AMD EPYC (family 25, model 1), AVX2, no
    native bf16``."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
            if not line.strip():
                break  # the first processor is enough
    name = fields.get("model name") or platform.processor() or platform.machine()
    if not any(character.isdigit() for character in name) and "cpu family" in fields:  # "AMD EPYC": which one?
        name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    capabilities = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    vector = next((label for flag, label in (("avx512_f", "AVX-512"), ("avx2", "AVX2")) if capabilities.get(flag)), torch.backends.cpu.get_cpu_capability())
    native, _ = _native_bf16(torch.device("cpu"))
    return f"{name}, {vector}, {'native bf16' if native else 'no native bf16'}"


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
