"""`longalign source` as users run it: new options reach the stage, --strict stops at bad input."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "longalign.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_source_cli_options_and_strict(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    words = " ".join(f"word{i} river garden letter" for i in range(300))
    (d / "good.txt").write_text(f"Title\n\n{words}\n")
    (d / "bad.txt.gz").write_bytes(gzip.compress(b"some text" * 100)[:15])
    (tmp_path / "rows.jsonl").write_text(json.dumps({"body": "short row " * 20}) + "\n")
    common = ["source", "--preset", "tiny", "--source", f"dir:{d}?group=long",
              "--source", f"jsonl:{tmp_path / 'rows.jsonl'}?field=body&group=short&min_tokens=5",
              "--min-tokens", "100", "--set", 'mix={"long": 0.5, "short": 0.5}', "--set", "mix_unit=documents"]
    strict = run_cli(*common, "--strict", "-o", str(tmp_path / "strict"), cwd=tmp_path)
    assert strict.returncode == 2 and "Traceback" not in strict.stderr
    errors = [line for line in strict.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "corrupt" in errors[0] and "bad.txt.gz" in errors[0]
    assert not (tmp_path / "strict").exists()

    ok = run_cli(*common, "--seed", "3", "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["config"]["seed"] == 3 and stats["config"]["mix_unit"] == "documents"
    assert stats["sources"][f"dir:{d}?group=long"]["rejected"] == {"corrupt": 1}
    assert stats["selection"]["mix"]["kept"] == {"long": 1, "short": 1}
