"""StageResult: what every stage returns, stored beside its stats and read back unchanged."""

from __future__ import annotations

import pytest

from longalign.errors import UserError
from longalign.results import StageResult, numeric


def test_written_result_loads_back_equal(tmp_path):
    result = StageResult("packing", tmp_path, {"rows": 3, "files": ["rows-00000.arrow"]},
                         metrics=numeric({"rows": 3, "ok": True, "note": "x", "none": None}),
                         headline={"rows": 3}, summary="summary.md")
    assert result.metrics == {"rows": 3, "ok": 1}
    result.write(tmp_path)
    loaded = StageResult.load(tmp_path)
    assert (loaded.stage, loaded.output, loaded.metrics, loaded.headline) == (
        "packing", tmp_path, {"rows": 3, "ok": 1}, {"rows": 3})
    assert loaded == result and loaded["rows"] == 3 and dict(loaded) == result.stats
    assert loaded.summary_path == tmp_path / "summary.md" and loaded.report_path is None


def test_an_unfinished_output_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="holds no result.json"):
        StageResult.load(tmp_path)
