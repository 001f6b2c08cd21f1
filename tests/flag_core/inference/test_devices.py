"""Device and precision choice."""

from __future__ import annotations

import pytest
import torch

from flag_core.inference.devices import available_devices, is_oom, resolve_devices, resolve_dtype


def test_resolve_devices() -> None:
    assert resolve_devices("cpu") == ["cpu"]
    assert resolve_devices(["cpu", "cpu"]) == ["cpu", "cpu"]
    assert resolve_devices(0) == ["cuda:0"]
    assert resolve_devices(["0", 1]) == ["cuda:0", "cuda:1"]
    assert resolve_devices(None) == available_devices()
    with pytest.raises(ValueError, match="at least one device"):
        resolve_devices([])
    with pytest.raises(ValueError, match="unknown device"):
        resolve_devices("gpu-please")
    with pytest.raises(TypeError, match="device"):
        resolve_devices([1.5])  # type: ignore[list-item]


def test_half_precision_only_where_it_belongs() -> None:
    assert resolve_dtype("cpu", use_fp16=True) == torch.float32  # fp16 ignored on CPUs
    assert resolve_dtype("cpu", use_bf16=True) == torch.bfloat16  # bf16 is an explicit opt-in
    assert resolve_dtype("cuda:0", use_fp16=True) == torch.float16
    assert resolve_dtype("cuda:0") == torch.float32


def test_only_out_of_memory_counts_as_oom() -> None:
    assert is_oom(torch.OutOfMemoryError("x"))
    assert not is_oom(RuntimeError("CUDA error: device-side assert triggered"))
    assert not is_oom(ValueError("x"))


def test_fp16_on_cpu_gives_fp32_weights(mini_model: object) -> None:
    assert mini_model.runtime.dtype == torch.float32  # type: ignore[attr-defined]


@pytest.mark.parametrize("features", [{"bf16": True, "vnni": True, "amx": False},
                                      {"bf16": False, "vnni": True, "amx": False},
                                      {"bf16": False, "vnni": False, "amx": False}])
def test_the_suggested_exact_mode_is_fp32(features: dict[str, bool | None]) -> None:
    from flag_core.inference.devices import suggested_cpu_mode

    exact = suggested_cpu_mode(features).split("exact")[1]
    assert "openvino" in exact and "bf16" not in exact  # bf16 is not exact (cosine 0.99998): it is named apart
