"""Device and precision choice, shared by every runtime in flag_core."""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Sequence
from typing import Any

import torch


def available_devices() -> list[str]:
    """Every accelerator torch can see (all CUDA GPUs, else MPS), else ``["cpu"]``."""
    if torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        return ["mps"]
    return ["cpu"]


def resolve_devices(devices: str | int | Sequence[str | int] | None) -> list[str]:
    """Normalise a user's ``devices`` argument to a non-empty list of torch device strings.

    None picks every accelerator (or the CPU); an int or "0" means "cuda:0"; a list may mix both.
    """
    if devices is None:
        return available_devices()
    items = [devices] if isinstance(devices, (str, int)) else list(devices)
    if not items:
        raise ValueError("devices must name at least one device, e.g. 'cpu' or ['cuda:0', 'cuda:1']")
    resolved: list[str] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise TypeError(f"a device must be a str like 'cuda:0' or an int, got {item!r}")
        name = f"cuda:{item}" if isinstance(item, int) or item.isdigit() else item
        try:
            torch.device(name)
        except RuntimeError as exc:
            raise ValueError(f"unknown device {item!r}: use 'cpu', 'cuda', 'cuda:N' or 'mps'") from exc
        resolved.append(name)
    return resolved


def check_available(device: str) -> None:
    """Raise a ValueError naming ``device`` when this machine cannot run on it (no CUDA build, no GPU, an
    index past the last GPU, no MPS), instead of the assertion torch raises deep inside loading."""
    kind = torch.device(device)
    if kind.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"device {device!r} is not available: {why} (torch {torch.__version__}); "
                             "use devices='cpu' or leave devices unset to take what the machine has")
        if kind.index is not None and kind.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} is not available: this machine has {torch.cuda.device_count()} "
                             f"CUDA GPU(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    elif kind.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r} is not available: this machine has no MPS (Apple GPU) support; "
                         "use devices='cpu'")


def resolve_dtype(device: str, use_fp16: bool = False, use_bf16: bool = False) -> torch.dtype:
    """The compute dtype for ``device``.

    fp16 runs only on accelerators (on a CPU it is ignored, as FlagEmbedding does); bf16 runs on
    accelerators and, when asked explicitly, on CPUs (fast on CPUs with AVX512-BF16 or AMX).
    """
    kind = torch.device(device).type
    if use_bf16:
        return torch.bfloat16
    if use_fp16 and kind != "cpu":
        return torch.float16
    return torch.float32


def is_oom(exc: BaseException) -> bool:
    """True only for an accelerator out-of-memory error (never for other RuntimeErrors)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    message = str(exc)
    return isinstance(exc, RuntimeError) and "MPS backend out of memory" in message


@functools.cache
def cpu_features() -> dict[str, bool | None]:
    """Which speed-relevant instruction sets this CPU has (from /proc/cpuinfo; None where it cannot be told)."""
    flags: set[str] | None = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        flags = None
    if flags is None:
        return dict.fromkeys(("avx2", "avx512", "vnni", "amx", "bf16"))
    return {
        "avx2": "avx2" in flags,
        "avx512": "avx512f" in flags,
        "vnni": bool(flags & {"avx512_vnni", "avx_vnni"}),
        "amx": bool(flags & {"amx_tile", "amx_int8", "amx_bf16"}),
        "bf16": bool(flags & {"avx512_bf16", "amx_bf16"}),
    }


def cpu_has_native_bf16() -> bool | None:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); None when it cannot be told."""
    return cpu_features()["bf16"]


def suggested_cpu_mode(features: dict[str, bool | None] | None = None) -> str:
    """The fastest CPU mode to try on this machine, in words (measured by ``benchmarks/backends.py``)."""
    features = cpu_features() if features is None else features
    int8 = "backend='openvino' with an int8 model from `flagstack quantize --backend openvino` (check its quality)"
    if features["bf16"]:
        return (f"{int8}, use_bf16=True on top; without int8: backend='openvino', use_bf16=True; exact (fp32): "
                "backend='openvino'")
    if features["vnni"] or features["amx"]:
        return f"{int8}; exact: backend='openvino'"
    return f"{int8} (no VNNI here: smaller int8 gain); exact: backend='openvino'"


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Hand memory the process has freed back to the operating system (glibc keeps freed blocks of
    varying-size batch tensors in its heap, so the resident size would creep up through a long run)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
