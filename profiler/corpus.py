"""Load a user's corpus (.txt, .jsonl, .csv) or the default one shipped in data/."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from profiler.errors import ProfilerError

DEFAULT_CORPUS = Path("data") / "corpus.txt"
FORMATS = (".txt", ".jsonl", ".csv")


def load_corpus(path: Path) -> list[str]:
    """Return the non-empty texts in `path`, or raise ProfilerError saying what is wrong."""
    if path.suffix.lower() not in FORMATS:
        raise ProfilerError(f"corpus {path} must be .txt, .jsonl or .csv")
    try:
        raw = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise ProfilerError(f"corpus {path} does not exist") from None
    except IsADirectoryError:
        raise ProfilerError(f"corpus {path} is a directory, not a file") from None
    except UnicodeDecodeError as exc:
        raise ProfilerError(f"corpus {path} is not UTF-8 text (byte {exc.start})") from None
    reader = {".txt": _txt, ".jsonl": _jsonl, ".csv": _csv}[path.suffix.lower()]
    texts = [text.strip() for text in reader(raw, path) if text.strip()]
    if not texts:
        raise ProfilerError(f"corpus {path} has no texts")
    return texts


def _txt(raw: str, path: Path) -> list[str]:
    return raw.splitlines()


def _jsonl(raw: str, path: Path) -> list[str]:
    texts = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise ProfilerError(f"corpus {path} line {number} is not valid JSON") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise ProfilerError(f"corpus {path} line {number} has no string field 'text'")
        texts.append(record["text"])
    return texts


def _csv(raw: str, path: Path) -> list[str]:
    reader = csv.DictReader(io.StringIO(raw))
    if not reader.fieldnames or "text" not in reader.fieldnames:
        raise ProfilerError(f"corpus {path} has no 'text' column")
    return [row["text"] or "" for row in reader]
