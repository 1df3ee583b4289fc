"""Where and in what precision the models run: resolved once into a :class:`PrecisionPlan`.

The plan (device and autocast dtype) is made once per command and passed down to training,
evaluation, the explainers and the audit's metrics, which accept either a plan or a precision
name (resolved for the model's device).

For training, ``auto`` picks what is fastest without losing accuracy: bf16 autocast on CPUs with
native bf16 (AVX512-BF16 or AMX; 2.5-3x over fp32 there) and fp32 on other CPUs, where emulated
bf16 is slower than fp32; bf16 AMP on CUDA GPUs that support it, else fp16 AMP with a gradient
scaler. CNNs also run channels-last, which the oneDNN and cuDNN convolutions prefer.

For measuring (evaluation, explanations, the audit), ``auto`` means fp32 on every CPU: the same
run and data must give the same numbers whichever CPU computes them, and bf16 only on request.

``OCTLENS_CPU_BF16=1`` (or ``0``) overrides the CPU's bf16 detection, so code paths of a bf16 CPU
can be exercised, and the test suite run, on any machine.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from octlens.errors import OctlensError, arg

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = ("auto", *_DTYPES)


def cpu_has_native_bf16() -> bool:
    forced = os.environ.get("OCTLENS_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
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


def resolve_precision(
    requested: str, device: torch.device, measuring: bool = False
) -> PrecisionPlan:
    """The plan for ``requested`` (``auto``, ``fp32``, ``bf16``, ``fp16``) on ``device``;
    ``measuring=True`` makes ``auto`` fp32 on CPUs (see the module docstring)."""
    if requested not in PRECISIONS:
        raise OctlensError(
            f"{arg('precision')} '{requested}': choose one of {', '.join(PRECISIONS)}"
        )
    if requested != "auto":
        if requested == "fp16" and device.type == "cpu":
            raise OctlensError(f"{arg('precision')} fp16 is for CUDA; use bf16 or fp32 on the CPU")
        return PrecisionPlan(requested, device)
    if device.type == "cuda":
        return PrecisionPlan("bf16" if torch.cuda.is_bf16_supported() else "fp16", device)
    if measuring:
        return PrecisionPlan("fp32", device)
    return PrecisionPlan("bf16" if cpu_has_native_bf16() else "fp32", device)


def plan_for(
    precision: str | PrecisionPlan, device: torch.device, measuring: bool = False
) -> PrecisionPlan:
    """``precision`` if it is a plan already, else the plan :func:`resolve_precision` makes."""
    if isinstance(precision, PrecisionPlan):
        return precision
    return resolve_precision(precision, device, measuring)


def resolve_device(requested: str | None) -> torch.device:
    """``requested`` (``cpu``, ``cuda``, ``cuda:1``, ...), or the best device present; a device
    that is misspelt or absent is a one-line error, not a failure at the first tensor."""
    if not requested:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise OctlensError(
            f"{arg('device')} '{requested}': not a device (expected cpu, cuda or cuda:N)"
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise OctlensError(f"{arg('device')} '{requested}': no CUDA GPU is available here")
        if device.index is not None and device.index >= count:
            raise OctlensError(f"{arg('device')} '{requested}': there are only {count} CUDA GPU(s)")
    elif device.type not in ("cpu", "mps"):
        raise OctlensError(f"{arg('device')} '{requested}': octlens runs on cpu or cuda")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise OctlensError(f"{arg('device')} '{requested}': MPS is not available here")
    return device
