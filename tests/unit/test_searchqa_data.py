"""Search-R1-format datasets and wiki-18 corpora read from a user's files, and bad files refused."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from services.envs.searchqa.data import DataError, load_corpus, load_dataset

ROWS = [
    {
        "id": "test_0",
        "question": "who wrote the silent harbour",
        "golden_answers": ["Ada Merrow", "A. Merrow"],
        "data_source": "nq",
    },
    {"id": "test_1", "question": "Which city is larger?", "golden_answers": ["Korvath"], "data_source": "hotpotqa"},
]


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_jsonl_file_is_one_split_named_by_its_stem(tmp_path: Path) -> None:
    splits = load_dataset(write_jsonl(tmp_path / "test.jsonl", ROWS))
    assert list(splits) == ["test"]
    q = splits["test"][0]
    assert (q.question, q.golden_answers, q.data_source) == (ROWS[0]["question"], ("Ada Merrow", "A. Merrow"), "nq")


def test_a_folder_of_parquet_and_jsonl_files_gives_a_split_each(tmp_path: Path) -> None:
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "train.parquet")
    write_jsonl(tmp_path / "test.jsonl", ROWS[:1])
    (tmp_path / "README.md").write_text("not data")
    splits = load_dataset(tmp_path)
    assert {k: len(v) for k, v in splits.items()} == {"test": 1, "train": 2}
    assert splits["train"][1].data_source == "hotpotqa"


def test_search_r1_processed_rows(tmp_path: Path) -> None:
    row = {
        "data_source": "nq",
        "prompt": [{"role": "user", "content": "Answer the given question. ..."}],
        "reward_model": {"style": "rule", "ground_truth": {"target": ["Paris"]}},
        "extra_info": {"split": "test", "index": 0, "question": "capital of france"},
    }
    pq.write_table(pa.Table.from_pylist([row]), tmp_path / "test.parquet")
    q = load_dataset(tmp_path / "test.parquet")["test"][0]
    assert (q.question, q.golden_answers, q.data_source) == ("capital of france", ("Paris",), "nq")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"question": "q", "data_source": "nq"}\n', "no golden answers"),
        ('{"question": "q", "golden_answers": [], "data_source": "nq"}\n', "no golden answers"),
        ('{"question": "q", "golden_answers": [3], "data_source": "nq"}\n', "no golden answers"),
        ('{"golden_answers": ["a"], "data_source": "nq"}\n', "no question"),
        ('{"question": "  ", "golden_answers": ["a"], "data_source": "nq"}\n', "no question"),
        ('{"question": "q", "golden_answers": ["a"]}\n', "no data_source"),
        ("{not json\n", "not JSON"),
        ("[1, 2]\n", "JSON object"),
        ("\n", "no rows"),
    ],
)
def test_bad_rows_are_refused_with_the_place_and_the_cause(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "test.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_dataset(path)


def test_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_dataset(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="must be a"):
        load_dataset(write_jsonl(tmp_path / "data.csv", ROWS))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"no \.parquet"):
        load_dataset(empty)
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 garbage")
    with pytest.raises(DataError, match="parquet"):
        load_dataset(tmp_path / "bad.parquet")


def test_corpus_lines(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "wiki.jsonl", [{"id": "7", "contents": '"Korvath"\nKorvath is a port.'}])
    [passage] = load_corpus(path)
    assert (passage.id, passage.title) == ("7", "Korvath")
    with pytest.raises(DataError, match="contents"):
        load_corpus(write_jsonl(tmp_path / "bad.jsonl", [{"id": "1", "text": "x"}]))
    with pytest.raises(DataError, match="empty corpus"):
        load_corpus(write_jsonl(tmp_path / "none.jsonl", []))
