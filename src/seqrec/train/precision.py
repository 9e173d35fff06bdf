"""train.precision: which floating-point format the forward pass and the losses run in.

fp32  no autocast.
bf16  torch.autocast(bfloat16) around forward + loss. On a CPU only where it has native bfloat16 arithmetic
      (AVX512-BF16 or AMX); elsewhere bfloat16 is emulated and many times slower (measured ~30x), so it is refused.
      On a GPU where torch.cuda.is_bf16_supported().
fp16  torch.autocast(float16) plus a GradScaler (float16's range is too small for the gradients without loss
      scaling). GPUs only.
auto  the fastest format that keeps the accuracy of fp32, per device: bf16 on a GPU that supports it (else fp16);
      fp32 on a CPU: even with AMX, a SASRec Beauty epoch ran 0.93x as fast in bf16 as in fp32 (autocast's casts
      of the item table and the logits outweigh the faster matmuls at these widths; docs/benchmarks.md,
      "Engine speed"), so bf16 on a CPU is opt-in. It pays where large products dominate the step: an EMKD step
      at d 64 ran 1.5x faster in bf16 than in fp32, with the same validation curve (docs/methods/emkd.md, "bf16 on
      a CPU with native bfloat16").
The weights, the optimiser state and the loss reductions stay in float32 in every mode (the losses cast logits to
float32 before their softmax).
"""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

from seqrec.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


CPUINFO = Path("/proc/cpuinfo")


def native_bf16_in_flags(cpuinfo: Path = CPUINFO) -> bool | None:
    """True / False from the CPU flags in a /proc/cpuinfo-style file (avx512_bf16 or amx_bf16), None without one."""
    if not cpuinfo.is_file():
        return None
    for line in cpuinfo.read_text(errors="replace").splitlines():
        if line.startswith("flags"):
            return bool(set(line.split(":", 1)[1].split()) & {"avx512_bf16", "amx_bf16"})
    return None


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when this CPU computes in bfloat16 natively: from the CPU flags, or where there is no /proc/cpuinfo
    (macOS, Windows), from oneDNN's own check."""
    found = native_bf16_in_flags()
    if found is not None:
        return found
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else False


def resolve_precision(name: str, device: torch.device) -> str:
    """The concrete precision (fp32 | bf16 | fp16) for `name` on `device`; ConfigError where it cannot run well."""
    if name not in PRECISIONS:
        raise ConfigError(f"train.precision: invalid value {name!r}; valid choices: {', '.join(PRECISIONS)}")
    cuda = device.type == "cuda"
    if name == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"       # measured faster than bf16 on a CPU (module docstring)
    if name == "bf16":
        if cuda and not torch.cuda.is_bf16_supported():
            raise ConfigError("train.precision: bf16 is not supported by this GPU; use fp16 (with loss scaling) or "
                              "fp32")
        if not cuda and not cpu_has_native_bf16():
            raise ConfigError("train.precision: bf16 on this CPU would be emulated (no avx512_bf16 / AMX-BF16) and "
                              "many times slower than fp32; use fp32")
    if name == "fp16" and not cuda:
        raise ConfigError("train.precision: fp16 is for GPUs (a CPU has no fast float16 arithmetic); use fp32, or bf16 "
                          "on a CPU with avx512_bf16 / AMX")
    return name


def autocast_factory(precision: str, device: torch.device):
    """A zero-argument callable returning the context for forward + loss under `precision` (fp32: a no-op)."""
    dtype = DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext
    return functools.partial(torch.autocast, device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler, enabled for fp16 only (bf16 has float32's exponent range and needs no loss scaling)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
