"""Atomic JSON writes, schema versions and the `data/` layout."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self, TypeVar

from profiler.errors import ProfilerError

R = TypeVar("R", bound="Record")

# 2: results name their workload (bulk, stream, query)
# 3: a run's summary says whether it is complete and which studies are missing, and why
SCHEMA_VERSION = 3
OLDEST_READABLE = 2  # version 1 measured other workloads: nothing to migrate it to


def _v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    if "studies" in data and "run_id" in data and "bottlenecks" in data:  # a run's summary
        data.setdefault("complete", True)
        data.setdefault("missing", {})
    return data


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {2: _v2_to_v3}


class Record:
    """A dataclass that is its own JSON: `to_dict` to write it, `from_dict` to read it back.

    Subclasses with derived fields or nested records extend the two; the field list is the
    schema, as pytest-benchmark's `Stats` and optimum-benchmark's results do it.
    """

    def to_dict(self) -> dict[str, Any]:
        """Return the record as plain JSON-ready data (nested records as dicts, tuples as lists:
        what reading its JSON gives)."""
        return plain(dataclasses.asdict(self))  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Read a record written by `to_dict`, nested records included, each field checked
        against its type; keys it does not know (derived ones) are left.

        ProfilerError names the first field that does not fit, in one line.
        """
        from pydantic import ValidationError

        try:
            return _adapter(cls).validate_python(data)  # type: ignore[arg-type]
        except ValidationError as exc:
            raise ProfilerError(mismatch(exc)) from None


def plain(value: Any) -> Any:
    """Data as its JSON reads back: tuples become lists, in dicts and lists at any depth."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


@functools.cache
def _adapter(cls: type) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(cls)


def mismatch(exc: Any) -> str:
    """A pydantic ValidationError as one line: where the first wrong field is and what is
    wrong; never the value, which may be anything."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "the record"
    return f"{where}: {str(first['msg']).removeprefix('Value error, ')}"


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write `payload` with a schema_version, atomically: readers never see half a file."""
    body = {"schema_version": SCHEMA_VERSION, **payload}
    write_text(path, json.dumps(body, indent=2, sort_keys=False) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write text to a temporary file beside `path`, fsync it, then rename over `path`.

    A failed write (a full disk, no permission) leaves `path` as it was and raises
    ProfilerError naming it.
    """
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: Path, data: bytes) -> None:
    """`write_text` for bytes: atomic, fsynced, `path` unchanged on failure."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are for everyone to read
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        raise write_error(path, exc) from None
    except BaseException:
        _discard(tmp)
        raise


def replace(source: str | Path, target: Path) -> None:
    """Rename `source` over `target` and make the rename last a power cut (folder fsync)."""
    os.replace(source, target)
    sync_folder(target.parent)


def sync_folder(folder: Path) -> None:
    """fsync a folder, so the names in it (a rename, a new file) reach the disk."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform that cannot open folders (Windows): nothing to sync
        return
    try:
        os.fsync(fd)
    except OSError:  # a file system that does not sync folders
        pass
    finally:
        os.close(fd)


def write_error(path: Path, exc: OSError) -> ProfilerError:
    """The one-line error for a file that could not be written."""
    return ProfilerError(f"could not write {path}: {exc.strerror or exc}; what was there before "
                         "is unchanged")


def _discard(tmp: str | None) -> None:
    if tmp is not None:
        Path(tmp).unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON file written by `write_json`, migrating older schema versions."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfilerError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProfilerError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProfilerError(f"{path} is not a JSON object")
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > SCHEMA_VERSION:
        raise ProfilerError(f"{path} has schema_version {version!r}; this profiler reads up to "
                            f"{SCHEMA_VERSION}")
    if version < OLDEST_READABLE:
        raise ProfilerError(f"{path} has schema_version {version}, from before workloads were "
                            "measured; rebuild it with `profiler build`")
    return migrate(data)


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Bring data of an older schema_version up to this one, a version at a time (in memory)."""
    while data["schema_version"] < SCHEMA_VERSION:
        data = {**MIGRATIONS[data["schema_version"]](data),
                "schema_version": data["schema_version"] + 1}
    return data


def require(path: Path, data: dict[str, Any], *fields: str) -> dict[str, Any]:
    """Return `data`, or raise ProfilerError naming `path` and the first field it lacks."""
    for name in fields:
        if name not in data:
            raise ProfilerError(f"{path} has no {name!r} field: the file is damaged or was "
                                "edited by hand")
    return data


def gzip_file(source: Path, target: Path) -> None:
    """Compress `source` into `target` atomically."""
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        with source.open("rb") as src, gzip.open(tmp, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst)
        with tmp.open("rb") as written:
            os.fsync(written.fileno())
        replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(target, exc) from None


def point_latest(data_dir: Path, run_dir: Path) -> None:
    """Make data/latest a link to `run_dir`, replacing the old link in one rename."""
    latest = data_dir / "latest"
    tmp = data_dir / ".latest.tmp"
    tmp.unlink(missing_ok=True)
    try:
        tmp.symlink_to(run_dir.relative_to(data_dir), target_is_directory=True)
    except OSError:  # no symlinks (e.g. Windows without privileges): fall back to a copy
        _replace_with_copy(run_dir, latest)
        return
    if latest.is_dir() and not latest.is_symlink():
        shutil.rmtree(latest)
    replace(tmp, latest)


def _replace_with_copy(run_dir: Path, latest: Path) -> None:
    staging = latest.with_name(".latest.copy")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(run_dir, staging)
    shutil.rmtree(latest, ignore_errors=True)
    replace(staging, latest)
