"""bf16 on the CPU, where the CPU computes it natively.

Recent x86 server CPUs multiply bf16 in hardware (Intel AMX, AVX512-BF16); PyTorch's oneDNN
kernels then run bf16 matrix products several times faster than fp32 (measured on a 2-core Xeon
with AMX: 333 vs 74 GFLOP/s for a 2048x576x1536 product; the training stage's 4k-token SmolLM2
step 1.6x faster, a 2k-token prefill 3x). Elsewhere bf16 is emulated and slower than fp32, so each stage's
``cpu_bf16`` option asks for bf16 and gets it only where the CPU has one of these features.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("longalign")

NATIVE_FEATURES = ("amx_bf16", "avx512_bf16")
OFF_ENV = "LONGALIGN_CPU_BF16"  # "0" turns cpu_bf16 off whatever the config says


def native_cpu_bf16() -> str | None:
    """The CPU feature that computes bf16 natively (``amx_bf16`` or ``avx512_bf16``), or None."""
    import torch

    capabilities = getattr(getattr(torch, "cpu", None), "get_capabilities", None)
    if capabilities is None:
        return None
    try:
        found = capabilities()
    except Exception:  # an unknown platform: assume nothing
        return None
    return next((f for f in NATIVE_FEATURES if found.get(f)), None)


def use_cpu_bf16(wanted: bool, what: str) -> str | None:
    """Whether ``what`` (a stage's model) runs in bf16 on this CPU: the native feature's name, or
    None for fp32. Asked for on a CPU without one, it says so once and stays in fp32."""
    if not wanted:
        return None
    if os.environ.get(OFF_ENV, "").strip() == "0":
        log.info("%s: fp32 (%s=0)", what, OFF_ENV)
        return None
    feature = native_cpu_bf16()
    if feature is None:
        log.info("%s: fp32 (cpu_bf16 asked for, but this CPU has neither %s)", what,
                 " nor ".join(NATIVE_FEATURES))
    else:
        log.info("%s: bf16 on the CPU (%s)", what, feature)
    return feature


def inference_dtype(wanted: bool, what: str):
    """The dtype to load a local inference model in: ``torch.bfloat16`` on a CPU-only machine whose
    CPU has native bf16 and ``cpu_bf16`` is asked for, else None (the loader's fp32)."""
    import torch

    if torch.cuda.is_available() or use_cpu_bf16(wanted, what) is None:
        return None
    return torch.bfloat16
