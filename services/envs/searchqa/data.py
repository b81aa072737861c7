"""Search-R1-format datasets and wiki-18-format corpora, read from files a user provides.

A dataset is a parquet or JSONL file (or a folder of them, one split per file, named by the file's
stem: `train.parquet`, `test.jsonl`). Each row needs a question, its golden answers and a data
source, in any of the layouts in use:
- FlashRAG / Search-R1 raw rows: `question`, `golden_answers`, `data_source` (or `metadata.data_source`);
- Search-R1's processed rows: `reward_model.ground_truth.target` for the answers, the question in
  `question` or `extra_info.question`.

A corpus is a JSONL file of `{"id", "contents"}` lines, `contents` being `"Title"\\ntext` (wiki-18).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from services.envs.searchqa.questions import Question
from services.envs.searchqa.retrieval import Passage

SUFFIXES = (".parquet", ".jsonl", ".json")


class DataError(ValueError):
    """A dataset or corpus file that cannot be read as one."""


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            yield from pq.read_table(path).to_pylist()
        except Exception as e:
            raise DataError(f"{path}: not a readable parquet file ({e})") from e
        return
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{n}: not JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{n}: a row must be a JSON object")
                yield row


def _dig(row: dict[str, Any], *keys: str) -> Any:
    value: Any = row
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def question_of(row: dict[str, Any], where: str) -> Question:
    text = row.get("question") or _dig(row, "extra_info", "question")
    answers = row.get("golden_answers")
    if answers is None:
        answers = _dig(row, "reward_model", "ground_truth", "target")
    source = row.get("data_source") or _dig(row, "metadata", "data_source")
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: no question (expected a 'question' field)")
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
        raise DataError(f"{where}: no golden answers (expected 'golden_answers', a list of strings)")
    if not isinstance(source, str) or not source:
        raise DataError(f"{where}: no data_source")
    return Question(text.strip(), tuple(answers), source, style="dataset")


def load_dataset(path: Path) -> dict[str, list[Question]]:
    """Split name -> questions, from a file (one split, named by its stem) or a folder of files."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES)
        if not files:
            raise DataError(f"{path}: no {'/'.join(SUFFIXES)} files in the folder")
    elif path.is_file():
        if path.suffix not in SUFFIXES:
            raise DataError(f"{path}: a dataset must be a {'/'.join(SUFFIXES)} file")
        files = [path]
    else:
        raise DataError(f"{path}: no such file or folder")
    splits: dict[str, list[Question]] = {}
    for file in files:
        questions = [question_of(row, f"{file} row {i}") for i, row in enumerate(_rows(file))]
        if not questions:
            raise DataError(f"{file}: no rows")
        splits[file.stem] = questions
    return splits


def load_corpus(path: Path) -> list[Passage]:
    if not path.is_file():
        raise DataError(f"{path}: no such corpus file")
    passages = []
    for i, row in enumerate(_rows(path)):
        contents = row.get("contents")
        if not isinstance(contents, str):
            raise DataError(f"{path} line {i + 1}: a corpus line needs 'contents' (and 'id')")
        passages.append(Passage(str(row.get("id", i)), contents))
    if not passages:
        raise DataError(f"{path}: an empty corpus")
    return passages
