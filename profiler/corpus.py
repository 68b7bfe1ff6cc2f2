"""Load a user's corpus (.txt, .jsonl, .csv) or the default one shipped in data/."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from profiler.errors import ProfilerError

DEFAULT_CORPUS = Path("data") / "corpus.txt"
FORMATS = (".txt", ".jsonl", ".csv")
MAX_CORPUS_MB = 200.0  # `corpus_max_mb`: a bigger file is refused before it is read
MAX_TEXT_CHARS = 100_000  # `text_max_chars`: far beyond what any model reads of one text
NEWLINES = re.compile(r"\r\n|\r|\n")  # line ends only: U+2028 and form feeds stay in a text


def load_corpus(path: Path, max_mb: float = MAX_CORPUS_MB,
                max_chars: int = MAX_TEXT_CHARS) -> list[str]:
    """Return the non-empty texts in `path`, or raise ProfilerError saying what is wrong."""
    if path.suffix.lower() not in FORMATS:
        raise ProfilerError(f"corpus {path} must be .txt, .jsonl or .csv")
    try:
        size_mb = path.stat().st_size / 2**20
        if size_mb > max_mb:
            raise ProfilerError(f"corpus {path} is {size_mb:,.1f} MB, over the {max_mb:,.1f} MB "
                                "cap (corpus_max_mb): sample it, or raise the cap")
        raw = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise ProfilerError(f"corpus {path} does not exist") from None
    except IsADirectoryError:
        raise ProfilerError(f"corpus {path} is a directory, not a file") from None
    except UnicodeDecodeError as exc:
        raise ProfilerError(f"corpus {path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ProfilerError(f"corpus {path} cannot be read: {exc.strerror or exc}") from None
    reader = {".txt": _txt, ".jsonl": _jsonl, ".csv": _csv}[path.suffix.lower()]
    texts = [text.strip() for text in reader(raw, path) if text.strip()]
    if not texts:
        raise ProfilerError(f"corpus {path} has no texts")
    longest = max(range(len(texts)), key=lambda i: len(texts[i]))
    if len(texts[longest]) > max_chars:
        raise ProfilerError(f"corpus {path}: text {longest + 1} has {len(texts[longest]):,} "
                            f"characters, over the {max_chars:,} cap (text_max_chars)")
    return texts


def _txt(raw: str, path: Path) -> list[str]:
    return NEWLINES.split(raw)


def _jsonl(raw: str, path: Path) -> list[str]:
    texts = []
    for number, line in enumerate(NEWLINES.split(raw), start=1):
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
    reader = csv.DictReader(io.StringIO(raw, newline=""))
    try:
        if not reader.fieldnames or "text" not in reader.fieldnames:
            raise ProfilerError(f"corpus {path} has no 'text' column")
        return [row["text"] or "" for row in reader]
    except csv.Error as exc:  # e.g. a field over the csv module's limit, a stray NUL
        raise ProfilerError(f"corpus {path} line {reader.line_num}: {exc}") from None
