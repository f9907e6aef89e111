"""The Accelerator for a run: DDP (also one process), DeepSpeed ZeRO-2/3 or FSDP2.

Launch with ``torchrun`` (or ``accelerate launch``): each process runs ``longalign train`` and
this module reads the usual torch.distributed environment (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT). DeepSpeed configs are built in (:data:`DEEPSPEED_PRESETS`, the same
as the JSON files under configs/training/) or read from a JSON file.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import torch

from longalign.config import TrainingConfig
from longalign.errors import UserError

_COMMON: dict[str, Any] = {
    # The loop accumulates itself and tells DeepSpeed where a step ends, so DeepSpeed must
    # neither divide the loss by an accumulation count nor count micro-batches itself.
    "train_micro_batch_size_per_gpu": 1,
    "gradient_accumulation_steps": 1,
    "gradient_clipping": 0.0,  # no clipping, like the DDP path
    "bf16": {"enabled": "auto"},
    # the loop builds a torch AdamW and passes it in
    "zero_allow_untested_optimizer": True,
    "steps_per_print": 1000000,
    "wall_clock_breakdown": False,
}

DEEPSPEED_PRESETS: dict[str, dict[str, Any]] = {
    "zero2": {**_COMMON, "zero_optimization": {
        "stage": 2, "overlap_comm": True, "contiguous_gradients": True,
        "reduce_scatter": True, "reduce_bucket_size": 5e8, "allgather_bucket_size": 5e8}},
    "zero3": {**_COMMON, "zero_optimization": {
        "stage": 3, "overlap_comm": True, "contiguous_gradients": True,
        "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
        "stage3_param_persistence_threshold": "auto",
        "stage3_max_live_parameters": 1e9, "stage3_max_reuse_distance": 1e9,
        "stage3_gather_16bit_weights_on_model_save": True}},
}
DEEPSPEED_PRESETS["zero3-offload"] = copy.deepcopy(DEEPSPEED_PRESETS["zero3"])
DEEPSPEED_PRESETS["zero3-offload"]["zero_optimization"].update({
    "offload_optimizer": {"device": "cpu", "pin_memory": True},
    "offload_param": {"device": "cpu", "pin_memory": True}})


def deepspeed_config(spec: str) -> dict[str, Any]:
    """A preset name (zero2, zero3, zero3-offload) or a JSON file."""
    if spec in DEEPSPEED_PRESETS:
        return copy.deepcopy(DEEPSPEED_PRESETS[spec])
    path = Path(spec)
    if not path.is_file():
        raise UserError(f"deepspeed_config {spec!r} is neither a preset "
                        f"({', '.join(DEEPSPEED_PRESETS)}) nor a file")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"deepspeed_config {path}: not JSON ({exc})") from None
    # whatever the file says, the loop's own accumulation is exact only with these
    cfg.update(train_micro_batch_size_per_gpu=1, gradient_accumulation_steps=1,
               zero_allow_untested_optimizer=True)
    return cfg


def zero_stage(accelerator: Any) -> int:
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return int(plugin.zero_stage) if plugin is not None else 0


def is_deepspeed(accelerator: Any) -> bool:
    return str(accelerator.distributed_type).endswith("DEEPSPEED")


def is_fsdp(accelerator: Any) -> bool:
    return str(accelerator.distributed_type).endswith("FSDP")


def make_accelerator(seed: int, config: TrainingConfig | None = None) -> Any:
    """An Accelerator for ``config.distributed`` with seeded RNGs."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    config = config or TrainingConfig()
    cuda = torch.cuda.is_available()
    precision = "bf16" if cuda and config.bf16 else "no"
    kwargs: dict[str, Any] = {"mixed_precision": precision}
    if config.distributed == "deepspeed":
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            raise UserError("distributed=deepspeed needs the deepspeed package") from None
        from accelerate.utils import DeepSpeedPlugin

        if int(os.environ.get("WORLD_SIZE", "1")) == 1:  # deepspeed still wants a process group
            os.environ.setdefault("RANK", "0")
            os.environ.setdefault("LOCAL_RANK", "0")
            os.environ.setdefault("WORLD_SIZE", "1")
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", str(_free_port()))
        ds = deepspeed_config(config.deepspeed_config)
        stage3 = ds.get("zero_optimization", {}).get("stage") == 3
        # ZeRO-3: from_pretrained then partitions weights while loading (zero.Init)
        kwargs["deepspeed_plugin"] = DeepSpeedPlugin(hf_ds_config=ds, zero3_init_flag=stage3)
        if not cuda:  # accelerate picks no backend on a CPU-only machine unless told
            from accelerate.utils import InitProcessGroupKwargs

            kwargs["kwargs_handlers"] = [InitProcessGroupKwargs(backend="gloo")]
    elif config.distributed == "fsdp2":
        if not cuda:
            raise UserError("distributed=fsdp2 needs CUDA GPUs (accelerate runs FSDP on GPUs "
                            "only); use ddp or deepspeed here")
        from accelerate.utils import FullyShardedDataParallelPlugin

        kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(
            fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
            reshard_after_forward=True, state_dict_type="FULL_STATE_DICT",
            activation_checkpointing=False)
    else:
        # Without cpu=True accelerate only detects a multi-process launch when a GPU is present;
        # every torchrun rank would then silently train alone on all the data.
        kwargs["cpu"] = not cuda
    accelerator = Accelerator(**kwargs)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and accelerator.num_processes == 1:
        raise RuntimeError(f"launched {launched} processes but accelerate sees only one")
    set_seed(seed)
    return accelerator


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
