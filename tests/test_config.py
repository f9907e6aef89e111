import pytest

from longalign.config import PRESETS, STAGES, RunConfig, load_run_config, parse_section
from longalign.errors import UserError


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_validate(preset):
    cfg = load_run_config(preset)
    assert isinstance(cfg, RunConfig)
    for stage in STAGES:
        assert getattr(cfg, stage) is not None


def test_overrides_apply_json_values_and_strings():
    cfg = load_run_config("tiny", overrides=[
        "training.epochs=3", "sourcing.sources=[\"stdlib:\", \"dir:/data\"]", "base_model=embedded:smollm2",
        "packing.strategy=sort",
    ])
    assert cfg.training.epochs == 3
    assert cfg.sourcing.sources == ["stdlib:", "dir:/data"]
    assert cfg.base_model == "embedded:smollm2"
    assert cfg.packing.strategy == "sort"
    # the rest of the preset is kept
    assert cfg.packing.max_len == PRESETS["tiny"]["packing"]["max_len"]


def test_file_data_merges_below_overrides():
    cfg = load_run_config("tiny", {"training": {"epochs": 5, "loss": "token"}}, ["training.epochs=2"])
    assert cfg.training.epochs == 2 and cfg.training.loss == "token"


@pytest.mark.parametrize("override, fragment", [
    ("training.epochs=zero", "training.epochs"),
    ("training.epoch=1", "training.epoch"),          # typo: unknown keys are errors
    ("packing.strategy=best", "packing.strategy"),
    ("sourcing.min_tokens=9000", "min_tokens"),       # > max_tokens of the preset
    ("noequals", "KEY=VALUE"),
])
def test_bad_values_are_one_line_user_errors(override, fragment):
    with pytest.raises(UserError) as info:
        load_run_config("tiny", overrides=[override])
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_preset_and_stage():
    with pytest.raises(UserError, match="unknown preset"):
        load_run_config("huge")
    with pytest.raises(UserError, match="unknown section"):
        parse_section("tuning", {})


def test_parse_section_round_trips_dumped_defaults():
    cfg = load_run_config("default")
    for stage in STAGES:
        dumped = getattr(cfg, stage).model_dump(mode="json", exclude_none=True)
        assert parse_section(stage, dumped) == getattr(cfg, stage)


def test_overrides_never_change_the_presets():
    before = load_run_config("tiny")
    with pytest.raises(UserError):
        load_run_config("tiny", overrides=["training.epochs=zero"])
    load_run_config("tiny", {"packing": {"max_len": 999}}, ["sourcing.max_tokens=4096"])
    assert load_run_config("tiny") == before
