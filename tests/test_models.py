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
