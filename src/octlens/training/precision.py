"""Numeric precision and memory layout for the device at hand.

``auto`` picks what is fastest without losing accuracy: bf16 autocast on CPUs with native bf16
(AVX512-BF16 or AMX; 2.5-3x over fp32 there) and fp32 on other CPUs, where emulated bf16 is slower
than fp32; bf16 AMP on CUDA GPUs that support it, else fp16 AMP with a gradient scaler.
CNNs also run channels-last, which the oneDNN and cuDNN convolutions prefer.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from octlens.errors import OctlensError

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_native_bf16() -> bool:
    is_avx512_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    is_amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    return bool(is_avx512_bf16() or is_amx())


@dataclass(frozen=True)
class PrecisionPlan:
    name: str  # "fp32", "bf16" or "fp16"
    device: torch.device

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_DTYPES[self.name])

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A scaler that is active only for fp16, where small gradients would underflow."""
        return torch.amp.GradScaler(self.device.type, enabled=self.name == "fp16")


def resolve_precision(requested: str, device: torch.device) -> PrecisionPlan:
    if requested != "auto":
        if requested == "fp16" and device.type == "cpu":
            raise OctlensError("--precision fp16 is for CUDA; use bf16 or fp32 on the CPU")
        return PrecisionPlan(requested, device)
    if device.type == "cuda":
        return PrecisionPlan("bf16" if torch.cuda.is_bf16_supported() else "fp16", device)
    return PrecisionPlan("bf16" if cpu_has_native_bf16() else "fp32", device)


def resolve_device(requested: str | None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
