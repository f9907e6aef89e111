import pytest

from longalign.errors import UserError
from longalign.models import load_model, load_tokenizer, resolve_model


def test_tiny_model_loads_with_chat_template(tiny_model):
    tokenizer = load_tokenizer(tiny_model)
    model = load_model(tiny_model)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.num_hidden_layers == 2


def test_tiny_model_is_deterministic(tiny_model):
    a = load_model(tiny_model).state_dict()
    b = load_model(resolve_model(tiny_model)).state_dict()
    assert all((a[k] == b[k]).all() for k in a)


@pytest.mark.parametrize("spec, fragment", [
    ("embedded:huge", "unknown embedded model"),
    ("./no/such/dir", "not found"),
])
def test_bad_specs(spec, fragment):
    with pytest.raises(UserError, match=fragment):
        resolve_model(spec)


def test_directory_without_config(tmp_path):
    with pytest.raises(UserError, match="config.json"):
        resolve_model(str(tmp_path))


def test_launcher_model_pointer_is_followed_to_the_volume(tmp_path, tiny_model):
    """The multi-node launcher's Model artifact holds pointer.json; scoring loads what it points at."""
    import json

    artifact = tmp_path / "model"
    artifact.mkdir()
    (artifact / "pointer.json").write_text(json.dumps(
        {"pvc": "data", "path": resolve_model(tiny_model), "uri": "pvc://data/runs/x/model"}))
    assert resolve_model(str(artifact)) == resolve_model(tiny_model)
    assert load_tokenizer(str(artifact)).chat_template


@pytest.mark.parametrize("pointer, fragment", [
    ({"pvc": "data", "path": "/nonexistent/volume/model", "uri": "pvc://data/model"},
     "pvc://data/model, which is not readable here: mount volume data"),
    ("not json", "not a model pointer"),
    ({"uri": "pvc://data/model"}, "not a model pointer"),
])
def test_unreadable_model_pointer_is_a_clear_error(tmp_path, pointer, fragment):
    import json

    (tmp_path / "pointer.json").write_text(pointer if isinstance(pointer, str) else json.dumps(pointer))
    with pytest.raises(UserError, match=fragment):
        resolve_model(str(tmp_path))


def test_a_gguf_file_is_parsed_once_while_converting_and_the_library_is_left_as_it_was():
    import gguf

    from longalign.models import gguf_parsed_once, smollm2_gguf

    folder, name = smollm2_gguf()
    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with gguf_parsed_once():
        first = gguf.GGUFReader(folder / name)
        assert gguf.GGUFReader(str(folder / name)) is first  # the same file: parsed once
        assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 30) is gguf.get_tensor_name_map(
            gguf.MODEL_ARCH.LLAMA, 30)
        assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2) is not gguf.get_tensor_name_map(
            gguf.MODEL_ARCH.LLAMA, 30)
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == (reader, name_map)
    assert first.fields  # a real reader


@pytest.mark.slow
def test_converting_with_a_single_parse_writes_the_same_checkpoint(tmp_path, monkeypatch):
    """About 35 s: the embedded model converted as transformers does it alone and with the file
    parsed once give the same weights, tokenizer and files."""
    import contextlib
    import hashlib

    from safetensors.torch import load_file

    from longalign import models

    def build(out):
        out.mkdir()
        models._build_smollm2(out)
        weights = load_file(str(out / "model.safetensors"))
        digest = hashlib.sha256()
        for key in sorted(weights):
            digest.update(key.encode() + weights[key].contiguous().numpy().tobytes())
        return digest.hexdigest(), (out / "tokenizer.json").read_bytes(), sorted(
            p.name for p in out.iterdir())

    once = build(tmp_path / "once")
    monkeypatch.setattr(models, "gguf_parsed_once", contextlib.nullcontext)
    assert build(tmp_path / "plain") == once
