"""The Accelerator for a run: DDP (also one process), DeepSpeed ZeRO-2/3 or FSDP2.

Launch with ``torchrun`` (or ``accelerate launch``): each process runs ``longalign train`` and
this module reads the usual torch.distributed environment (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT). DeepSpeed configs are built in (:data:`DEEPSPEED_PRESETS`, the same
as the JSON files under configs/training/) or read from a JSON file.

FSDP2 is applied here with torch's ``fully_shard`` (:func:`shard_fsdp2`), not through
accelerate's FSDP plugin: accelerate selects FSDP only on GPU launches (on CPU it would wrap
the model in DDP and ignore the plugin), so the same code path runs on CPU (gloo) and GPU.
accelerate still sets up the process group, devices, RNG states and collectives; the sharded
model and its optimizer are never passed to ``accelerator.prepare``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from longalign.config import TrainingConfig
from longalign.errors import UserError
from longalign.precision import use_cpu_bf16

log = logging.getLogger("longalign")

_COMMON: dict[str, Any] = {
    # The loop accumulates itself and tells DeepSpeed where a step ends, so DeepSpeed must
    # neither divide the loss by an accumulation count nor count micro-batches itself.
    "train_micro_batch_size_per_gpu": 1,
    "gradient_accumulation_steps": 1,
    # overwritten with training.max_grad_norm, so every path clips alike
    "gradient_clipping": 1.0,
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


def make_accelerator(seed: int, config: TrainingConfig | None = None) -> Any:
    """An Accelerator for ``config.distributed`` with seeded RNGs."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    config = config or TrainingConfig()
    cuda = torch.cuda.is_available()
    precision = "bf16" if cuda and config.bf16 else "no"
    if not cuda and config.cpu_bf16:
        if config.distributed != "ddp":
            log.info("training: fp32 (cpu_bf16 applies to distributed=ddp only)")
        elif use_cpu_bf16(True, "training") is not None:
            precision = "bf16"  # accelerate wraps the forward in CPU autocast; weights stay fp32
    kwargs: dict[str, Any] = {"mixed_precision": precision}
    if config.distributed == "deepspeed":
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            raise UserError("distributed=deepspeed needs the deepspeed package") from None
        from accelerate.utils import DeepSpeedPlugin

        _single_process_env()  # deepspeed still wants a process group
        ds = deepspeed_config(config.deepspeed_config)
        ds["gradient_clipping"] = config.max_grad_norm
        stage3 = ds.get("zero_optimization", {}).get("stage") == 3
        # ZeRO-3: from_pretrained then partitions weights while loading (zero.Init)
        kwargs["deepspeed_plugin"] = DeepSpeedPlugin(hf_ds_config=ds, zero3_init_flag=stage3)
        if not cuda:  # accelerate picks no backend on a CPU-only machine unless told
            from accelerate.utils import InitProcessGroupKwargs

            kwargs["kwargs_handlers"] = [InitProcessGroupKwargs(backend="gloo")]
    elif config.distributed == "fsdp2":
        # accelerate only sets up processes and devices (gloo on CPU, as for DDP); the model is
        # sharded by shard_fsdp2. bf16 comes from FSDP's MixedPrecisionPolicy, not autocast.
        kwargs["mixed_precision"] = "no"
        kwargs["cpu"] = not cuda
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


def _single_process_env() -> None:
    """The torch.distributed variables of a one-process group, unless a launcher set them."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("LOCAL_RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's repeated blocks (the classes transformers lists in ``_no_split_modules``,
    e.g. ``LlamaDecoderLayer``), innermost first."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    return [m for m in reversed(list(model.modules()))
            if m is not model and type(m).__name__ in names]


def shard_fsdp2(model: torch.nn.Module, accelerator: Any,
                config: TrainingConfig | None = None) -> torch.nn.Module:
    """Apply FSDP2 in place: ``fully_shard`` on each decoder layer, then on the root (which
    takes the embeddings, final norm and LM head). Layers free their gathered parameters after
    forward and gather them again in backward; gradients are reduce-scattered (averaged over
    ranks, like DDP) after every backward. On GPU with ``bf16`` parameters are gathered and
    computed in bf16, gradients reduced in fp32, and the sharded fp32 weights stay the master
    copy. Build the optimizer after this (its parameters are the sharded DTensors)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    config = config or TrainingConfig()
    device = accelerator.device
    layers = decoder_layers(model)
    if not layers:
        raise UserError(f"distributed=fsdp2: {type(model).__name__} names no decoder layer class "
                        "(_no_split_modules); use ddp or deepspeed")
    if not dist.is_initialized():  # one process, no launcher: a private group of one rank
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                store=dist.HashStore(), rank=0, world_size=1)
    mesh = init_device_mesh(device.type, (accelerator.num_processes,))
    policy = MixedPrecisionPolicy()
    if device.type == "cuda" and config.bf16:
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for layer in layers:
        fully_shard(layer, mesh=mesh, mp_policy=policy, reshard_after_forward=True)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def is_fsdp2_model(model: Any) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole (unsharded) state dict of an FSDP2 model on CPU, on the main process (empty
    elsewhere). Every rank must call it: the shards are all-gathered."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                 cpu_offload=True))
    # Each name of a shared (tied) parameter comes back as its own copy; share them again so
    # that save_pretrained recognises the tie and writes the matrix once, as without FSDP.
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    for tied in names.values():
        for name in tied[1:]:
            if tied[0] in state and name in state:
                state[name] = state[tied[0]]
    return state


def shutdown() -> None:
    """Destroy the default process group, if this process has one: the end of a rank's work.
    A group left for the interpreter's exit to tear down can abort the process there ("terminate
    called without an active exception", SIGABRT), after its work is done: seen once on a ZeRO-3
    rank on CPU. A launcher would report such a rank as failed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
