"""load_corpus for each format and each way a corpus can be wrong; the committed default corpus."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from profiler import default_corpus
from profiler.corpus import load_corpus
from profiler.errors import ProfilerError

REPO = Path(__file__).resolve().parent.parent


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- formats --------------------------------------------------------------------------------


def test_txt_one_text_per_line_blank_lines_skipped(tmp_path: Path) -> None:
    path = _bytes(tmp_path / "c.txt", b"first text\n\n   \nsecond text  \r\n\tthird\n\n")
    assert load_corpus(path) == ["first text", "second text", "third"]


def test_txt_without_trailing_newline_and_non_ascii(tmp_path: Path) -> None:
    path = _bytes(tmp_path / "c.txt", "Bogotá grew\nKraków fell".encode())
    assert load_corpus(path) == ["Bogotá grew", "Kraków fell"]


def test_txt_with_bom(tmp_path: Path) -> None:
    path = _bytes(tmp_path / "c.txt", b"\xef\xbb\xbfalpha\nbeta\n")
    assert load_corpus(path) == ["alpha", "beta"]


def test_jsonl_text_field(tmp_path: Path) -> None:
    lines = [json.dumps({"text": "one", "id": 1}), "", json.dumps({"text": "two, \"quoted\""}),
             json.dumps({"text": "   "})]
    path = _bytes(tmp_path / "c.jsonl", ("\n".join(lines) + "\n").encode())
    assert load_corpus(path) == ["one", 'two, "quoted"']


def test_jsonl_with_bom(tmp_path: Path) -> None:
    path = _bytes(tmp_path / "c.jsonl", b'\xef\xbb\xbf{"text": "a"}\n{"text": "b"}\n')
    assert load_corpus(path) == ["a", "b"]


def test_csv_text_column(tmp_path: Path) -> None:
    path = _bytes(tmp_path / "c.csv",
                  b'id,text,lang\n1,hello world,en\n2,"comma, inside",en\n3,,en\n4,  last  ,en\n')
    assert load_corpus(path) == ["hello world", "comma, inside", "last"]


def test_csv_with_bom_in_header(tmp_path: Path) -> None:
    path = _bytes(tmp_path / "c.csv", b"\xef\xbb\xbftext\nalpha\nbeta\n")
    assert load_corpus(path) == ["alpha", "beta"]


def test_extension_is_case_insensitive(tmp_path: Path) -> None:
    path = _bytes(tmp_path / "C.TXT", b"upper\n")
    assert load_corpus(path) == ["upper"]


# --- errors ---------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ProfilerError, match="does not exist"):
        load_corpus(tmp_path / "missing.txt")


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "texts.txt").mkdir()
    with pytest.raises(ProfilerError, match="directory"):
        load_corpus(tmp_path / "texts.txt")


@pytest.mark.parametrize(("name", "message"), [("e.txt", "no texts"), ("e.jsonl", "no texts"),
                                               ("e.csv", "no 'text' column")])
def test_empty_file(tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(ProfilerError, match=message):
        load_corpus(_bytes(tmp_path / name, b""))


def test_whitespace_only(tmp_path: Path) -> None:
    with pytest.raises(ProfilerError, match="no texts"):
        load_corpus(_bytes(tmp_path / "w.txt", b"  \n\t\n\r\n   "))


def test_csv_header_only_has_no_texts(tmp_path: Path) -> None:
    with pytest.raises(ProfilerError, match="no texts"):
        load_corpus(_bytes(tmp_path / "h.csv", b"text\n"))


@pytest.mark.parametrize("name", ["b.txt", "b.jsonl", "b.csv"])
def test_not_utf8(tmp_path: Path, name: str) -> None:
    path = _bytes(tmp_path / name, b"text\nfine line\n\xff\xfe broken \x80\n")
    with pytest.raises(ProfilerError, match="not UTF-8"):
        load_corpus(path)


def test_jsonl_bad_line_names_the_line(tmp_path: Path) -> None:
    path = _bytes(tmp_path / "j.jsonl", b'{"text": "ok"}\n\n{"text": oops}\n')
    with pytest.raises(ProfilerError, match="line 3 is not valid JSON"):
        load_corpus(path)


@pytest.mark.parametrize("record", ['{"body": "x"}', '{"text": 5}', '["text"]', '"text"',
                                    '{"text": null}'])
def test_jsonl_without_string_text(tmp_path: Path, record: str) -> None:
    path = _bytes(tmp_path / "j.jsonl", f'{{"text": "ok"}}\n{record}\n'.encode())
    with pytest.raises(ProfilerError, match="line 2 has no string field 'text'"):
        load_corpus(path)


def test_csv_without_text_column(tmp_path: Path) -> None:
    path = _bytes(tmp_path / "c.csv", b"id,body\n1,hello\n")
    with pytest.raises(ProfilerError, match="no 'text' column"):
        load_corpus(path)


def test_line_separators_inside_a_text_do_not_split_it(tmp_path: Path) -> None:
    raw = "one\u2028still one\ntwo\x0cstill two\r\nthree\rfour"
    path = _bytes(tmp_path / "t.txt", raw.encode())
    assert load_corpus(path) == ["one\u2028still one", "two\x0cstill two", "three", "four"]
    jsonl = _bytes(tmp_path / "t.jsonl", '{"text": "a\u2028b"}\n{"text": "c"}\n'.encode())
    assert load_corpus(jsonl) == ["a\u2028b", "c"]


def test_a_csv_field_over_the_csv_limit_is_one_clear_error(tmp_path: Path) -> None:
    path = _bytes(tmp_path / "c.csv", b'text\nshort\n"' + b"x" * 200_000 + b'"\n')
    with pytest.raises(ProfilerError, match=r"c\.csv line \d+: field larger than field limit"):
        load_corpus(path)


def test_a_text_over_the_cap_is_named(tmp_path: Path) -> None:
    path = _bytes(tmp_path / "t.txt", b"short\n" + b"y" * 501 + b"\nshort too\n")
    assert len(load_corpus(path)) == 3
    with pytest.raises(ProfilerError, match=r"text 2 has 501 characters, over the 500 cap "
                                            r"\(text_max_chars\)"):
        load_corpus(path, max_chars=500)


def test_a_corpus_over_the_size_cap_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = _bytes(tmp_path / "big.txt", b"some text\n" * 30_000)  # about 0.3 MB
    assert len(load_corpus(path, max_mb=1)) == 30_000
    with pytest.raises(ProfilerError, match=r"big\.txt is 0\.3 MB, over the 0\.1 MB cap "
                                            r"\(corpus_max_mb\)"):
        load_corpus(path, max_mb=0.1)


@pytest.mark.parametrize("name", ["c.json", "c.tsv", "c", "c.txt.gz"])
def test_unsupported_extension(tmp_path: Path, name: str) -> None:
    path = _bytes(tmp_path / name, b"some text\n")
    with pytest.raises(ProfilerError, match=r"\.txt, \.jsonl or \.csv"):
        load_corpus(path)


# --- the default corpus ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def committed() -> list[str]:
    return load_corpus(REPO / "data" / "corpus.txt")


def test_committed_corpus_is_the_generated_one() -> None:
    raw = (REPO / "data" / "corpus.txt").read_text(encoding="utf-8")
    assert raw.rstrip("\n").split("\n") == default_corpus.generate()


def test_generate_is_deterministic_and_seed_dependent() -> None:
    assert default_corpus.generate() == default_corpus.generate()
    assert default_corpus.generate(seed=1, size=50) != default_corpus.generate(seed=2, size=50)
    assert len(default_corpus.generate(size=7)) == 7


def test_committed_corpus_shape(committed: list[str]) -> None:
    lengths = [len(text) for text in committed]
    assert 950 <= len(committed) <= 1050
    assert min(lengths) >= 15
    assert max(lengths) <= 320
    assert 75 <= statistics.median(lengths) <= 125
    assert all(text == text.strip() and "\n" not in text for text in committed)
