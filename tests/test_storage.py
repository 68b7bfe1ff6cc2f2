"""Atomic JSON writes, schema versions, data/latest and gzip."""

from __future__ import annotations

import gzip
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from profiler import storage
from profiler.errors import ProfilerError
from profiler.storage import SCHEMA_VERSION, gzip_file, point_latest, read_json, write_json


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_write_json_adds_schema_version_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "out" / "nested" / "result.json"  # parents are created
    payload = {"name": "run", "values": [1.5, 2], "nested": {"a": None}, "text": "Kraków"}
    write_json(path, payload)
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert raw == {"schema_version": SCHEMA_VERSION, **payload}
    assert next(iter(raw)) == "schema_version"
    assert read_json(path) == raw


def test_write_json_leaves_no_temp_files(tmp_path: Path) -> None:
    write_json(tmp_path / "a.json", {"x": 1})
    write_json(tmp_path / "a.json", {"x": 2})  # overwrite
    write_json(tmp_path / "b.json", {"y": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]
    assert read_json(tmp_path / "a.json")["x"] == 2


def test_write_json_mode_is_readable_by_everyone(tmp_path: Path, umask_022: None) -> None:
    path = tmp_path / "a.json"
    write_json(path, {"x": 1})
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_write_json_respects_a_stricter_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o600


def test_failed_replace_keeps_the_previous_file(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.json"
    write_json(path, {"version": "old"})
    before = path.read_bytes()

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(storage.os, "replace", broken_replace)
    with pytest.raises(ProfilerError, match=f"could not write {path}: disk on fire; what was "
                                            "there before is unchanged"):
        write_json(path, {"version": "new"})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_unserializable_payload_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    write_json(path, {"version": "old"})
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_read_json_rejects_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "future.json"
    path.write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1}), encoding="utf-8")
    with pytest.raises(ProfilerError, match="schema_version"):
        read_json(path)


@pytest.mark.parametrize("version", [None, "1", 1.0])
def test_read_json_rejects_missing_or_non_int_schema(tmp_path: Path, version: object) -> None:
    path = tmp_path / "odd.json"
    body = {"x": 1} if version is None else {"schema_version": version}
    path.write_text(json.dumps(body), encoding="utf-8")
    with pytest.raises(ProfilerError, match="schema_version"):
        read_json(path)


def test_read_json_rejects_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"schema_version": 1, "x": ', encoding="utf-8")
    with pytest.raises(ProfilerError, match="not valid JSON"):
        read_json(path)


def test_read_json_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ProfilerError, match="does not exist"):
        read_json(tmp_path / "nope.json")


def test_read_json_rejects_a_non_object(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ProfilerError):
        read_json(path)


def test_read_json_rejects_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bin.json"
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ProfilerError):
        read_json(path)


# --- data/latest ----------------------------------------------------------------------------


def _run(data: Path, run_id: str) -> Path:
    run = data / "runs" / run_id
    run.mkdir(parents=True)
    write_json(run / "summary.json", {"run_id": run_id})
    return run


def test_point_latest_creates_a_relative_symlink(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run = _run(data, "20250101T000000Z")
    point_latest(data, run)
    latest = data / "latest"
    assert latest.is_symlink()
    assert os.readlink(latest) == os.path.join("runs", "20250101T000000Z")
    assert latest.resolve() == run.resolve()
    assert read_json(latest / "summary.json")["run_id"] == "20250101T000000Z"
    assert not (data / ".latest.tmp").exists()


def test_point_latest_replaces_the_link_in_one_rename(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    old, new = _run(data, "20250101T000000Z"), _run(data, "20250102T000000Z")
    point_latest(data, old)
    seen: list[str] = []
    real_replace = os.replace

    def spying_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        # At the moment of the rename the old link must still be whole: never a gap.
        seen.append(os.readlink(data / "latest"))
        real_replace(src, dst)

    monkeypatch.setattr(storage.os, "replace", spying_replace)
    point_latest(data, new)
    assert seen == [os.path.join("runs", "20250101T000000Z")]
    assert (data / "latest").resolve() == new.resolve()
    assert sorted(p.name for p in data.iterdir()) == ["latest", "runs"]
    assert old.is_dir()  # the previous run is kept


def test_point_latest_replaces_a_copied_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run = _run(data, "20250103T000000Z")
    (data / "latest").mkdir()  # left by the no-symlink fallback
    (data / "latest" / "summary.json").write_text("{}", encoding="utf-8")
    point_latest(data, run)
    assert (data / "latest").is_symlink()
    assert (data / "latest").resolve() == run.resolve()


def test_point_latest_survives_a_stale_temp_link(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run = _run(data, "20250104T000000Z")
    (data / ".latest.tmp").symlink_to("runs/gone")  # left by an interrupted run
    point_latest(data, run)
    assert (data / "latest").resolve() == run.resolve()
    assert not (data / ".latest.tmp").is_symlink()


# --- gzip -----------------------------------------------------------------------------------


def test_gzip_file_round_trip(tmp_path: Path) -> None:
    source = tmp_path / "profile.json"
    body = json.dumps({"lines": list(range(5000))}).encode()
    source.write_bytes(body)
    target = tmp_path / "profile.json.gz"
    gzip_file(source, target)
    assert gzip.decompress(target.read_bytes()) == body
    assert target.stat().st_size < len(body)
    assert source.read_bytes() == body  # the source is left for the caller
    assert sorted(p.name for p in tmp_path.iterdir()) == ["profile.json", "profile.json.gz"]


def test_a_write_syncs_the_file_and_then_its_folder(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_json(tmp_path / "a.json", {"x": 1})
    assert synced == ["file", "folder"]  # the data, then the rename that names it


def test_the_texts_a_build_keeps_come_back_exactly(tmp_path: Path) -> None:
    from profiler.rundir import RunDir

    texts = ["plain", "line\u2028separator", "form\x0cfeed", 'quote " and \\', "ünïcödé"]
    RunDir(tmp_path).write_texts(texts)
    assert RunDir(tmp_path).read_texts() == texts
