"""Short instruction chats mixed in at a ratio: formats, bad records, seeded draw, the stage."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longalign.config import GenerationConfig
from longalign.errors import UserError
from longalign.generation import generate
from longalign.generation.shortdata import draw_short, load_short_chats, normalize_chat


def _chat(i):
    return {"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                         {"role": "assistant", "content": str(2 * i)}]}


def _write_jsonl(path, records, extra_lines=()):
    with path.open("w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
        for line in extra_lines:
            f.write(line + "\n")
    return path


@pytest.mark.parametrize("record,reason", [
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}, ""),
    ({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}, ""),
    ({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                   {"role": "assistant", "content": "Hello"}]}, ""),
    ({"messages": []}, "no_messages"),
    ({"text": "Hi"}, "no_messages"),
    ("just a string", "not_an_object"),
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "robot", "content": "Beep"}]}, "bad_role"),
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": " "}]}, "empty_message"),
    ({"messages": [{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "Yo"}]}, "no_final_answer"),
])
def test_normalize_chat(record, reason):
    chat, why = normalize_chat(record)
    assert why == reason and (chat is None) == bool(reason)
    if chat:
        assert chat[-1] == ("assistant", "Hello")


def test_bad_lines_and_duplicates_are_counted(tmp_path):
    path = _write_jsonl(tmp_path / "short.jsonl", [_chat(1), _chat(2), _chat(1), {"messages": []}],
                        extra_lines=["{not json", ""])
    chats, skips = load_short_chats(path)
    assert len(chats) == 2
    assert skips == {"duplicate": 1, "no_messages": 1, "bad_json": 1}


def test_parquet_folder_is_read(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist([_chat(i) for i in range(3)]), folder / "train-00000.parquet")
    _write_jsonl(folder / "more.jsonl", [_chat(7)])
    chats, _ = load_short_chats(folder)
    assert sorted(chat[-1][1] for chat in chats) == ["0", "14", "2", "4"]


def test_draw_is_seeded_without_replacement_and_reports_shortfall(tmp_path):
    path = _write_jsonl(tmp_path / "short.jsonl", [_chat(i) for i in range(20)])
    a, stats = draw_short(*load_short_chats(path), 0.5, 10, seed=0)
    b, _ = draw_short(*load_short_chats(path), 0.5, 10, seed=0)
    c, _ = draw_short(*load_short_chats(path), 0.5, 10, seed=1)
    assert stats == {"available": 20, "requested": 5, "used": 5, "skipped": {}}
    assert [s.id for s in a] == [s.id for s in b] and [s.id for s in a] != [s.id for s in c]
    assert len({s.doc_id for s in a}) == 5
    everything, stats = draw_short(*load_short_chats(path), 3.0, 10, seed=0)
    assert stats["requested"] == 30 and stats["used"] == 20


def test_stage_mixes_short_chats_at_the_ratio(corpus, tmp_path):
    path = _write_jsonl(tmp_path / "short.jsonl", [_chat(i) for i in range(50)])
    config = GenerationConfig(teacher="synthetic", synthetic_per_document=2, short_data=str(path), short_ratio=0.4)
    stats = generate(config, corpus, tmp_path / "out")
    rows = pq.read_table(tmp_path / "out" / "samples-00000.parquet").to_pylist()
    short = [r for r in rows if r["task"] == "short"]
    assert len(rows) == 14 and len(short) == 4  # 10 long samples x 0.4
    assert all(r["teacher"] == "short_data" and r["reference"] is None for r in short)
    assert all(r["messages"] == _chat(int(r["messages"][1]["content"]) // 2)["messages"] for r in short)
    assert stats["short_data"]["used"] == 4 and stats["samples"]["by_task"]["short"] == 4
    assert stats["documents"]["used"] == 5  # short chats are not corpus documents


def test_missing_short_data_and_ratio_without_data_are_user_errors(corpus, tmp_path):
    with pytest.raises(UserError, match="short_data not found"):
        generate(GenerationConfig(teacher="synthetic", short_data=str(tmp_path / "no.jsonl"), short_ratio=1),
                 corpus, tmp_path / "out")
    from longalign.config import parse_section

    with pytest.raises(UserError, match="short_ratio > 0 needs short_data"):
        parse_section("generation", {"short_ratio": 0.5})


def test_hugging_face_save_to_disk_arrow_files_are_read(tmp_path):
    folder = tmp_path / "hf_dataset"
    folder.mkdir()
    table = pa.Table.from_pylist([_chat(i) for i in range(4)])
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    (folder / "dataset_info.json").write_text("{}")
    chats, skips = load_short_chats(folder)
    assert len(chats) == 4 and not skips
