"""Where local models run and in which precision: bf16 on the CPU where the CPU computes it
natively, and the GPU for local inference models when the pod has one.

Recent x86 server CPUs multiply bf16 in hardware (Intel AMX, AVX512-BF16); PyTorch's oneDNN
kernels then run bf16 matrix products several times faster than fp32 (measured on a 2-core Xeon
with AMX: 333 vs 74 GFLOP/s for a 2048x576x1536 product; the training stage's 4k-token SmolLM2
step 1.6x faster, a 2k-token prefill 3x). Elsewhere bf16 is emulated and slower than fp32, so each stage's
``cpu_bf16`` option asks for bf16 and gets it only where the CPU has one of these features.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class Placement:
    """Where a local inference model (the local teacher, a scoring model) runs: ``device`` is
    ``"cuda"`` or ``"cpu"``, ``dtype`` the torch dtype to load its weights in (None: the loader's
    fp32)."""

    device: str
    dtype: Any = None
    gpus: int = 0  # on CUDA: the GPUs the model's layers are spread over (all the pod has)

    @property
    def precision(self) -> str:
        """``fp32``, ``bf16`` or ``fp16``."""
        if self.dtype is None:
            return "fp32"
        return str(self.dtype).removeprefix("torch.").replace("bfloat16", "bf16").replace(
            "float16", "fp16").replace("float32", "fp32")

    @property
    def tag(self) -> str:
        """What changes the replies of a greedy decode: ``""`` for fp32 on the CPU, else the
        precision and, on a GPU, ``cuda`` (``"bf16"``, ``"bf16|cuda"``, ``"fp16|cuda"``)."""
        parts = [] if self.precision == "fp32" else [self.precision]
        return "|".join(parts + (["cuda"] if self.device == "cuda" else []))


def inference_placement(wanted_cpu_bf16: bool, what: str) -> Placement:
    """Where to run a local inference model. On a machine with CUDA GPUs: on the GPU, or with
    several, its layers spread over all of them (a model too big for one), in bf16 where the GPU
    supports it, else fp16 (fp32 inference would waste the GPU's memory and speed).
    Without one: the CPU, in bf16 when ``cpu_bf16`` is asked for and the CPU computes it natively
    (:func:`use_cpu_bf16`), else fp32. When the pod was given a GPU (``NVIDIA_VISIBLE_DEVICES``)
    but this torch is a CPU-only build, says so: the pod runs the data image."""
    import torch

    if torch.cuda.is_available():
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        placement = Placement("cuda", dtype, gpus=torch.cuda.device_count())
        where = "the GPU" if placement.gpus == 1 else f"{placement.gpus} GPUs, layers spread,"
        log.info("%s: on %s (%s) in %s", what, where, torch.cuda.get_device_name(0),
                 placement.precision)
        return placement
    visible = os.environ.get("NVIDIA_VISIBLE_DEVICES", "").strip()
    if visible and visible not in ("void", "none") and torch.version.cuda is None:
        log.warning("%s: this pod was given GPU(s) %s, but torch %s is a CPU-only build; running "
                    "on the CPU (use the CUDA image, longalign-cuda, for inference on a GPU)",
                    what, visible, torch.__version__)
    return Placement("cpu", torch.bfloat16 if use_cpu_bf16(wanted_cpu_bf16, what) else None)
