"""Atomic JSON writes, schema versions and the `data/` layout."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from profiler.errors import ProfilerError

SCHEMA_VERSION = 2  # 2: results name their workload (bulk, stream, query)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write `payload` with a schema_version, atomically: readers never see half a file."""
    body = {"schema_version": SCHEMA_VERSION, **payload}
    write_text(path, json.dumps(body, indent=2, sort_keys=False) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write text to a temporary file beside `path`, fsync it, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are for everyone to read
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ProfilerError(f"{path} has schema_version {version!r}; this profiler reads up to "
                            f"{SCHEMA_VERSION}")
    return data


def gzip_file(source: Path, target: Path) -> None:
    """Compress `source` into `target` atomically."""
    tmp = target.with_name(f".{target.name}.tmp")
    with source.open("rb") as src, gzip.open(tmp, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst)
    os.replace(tmp, target)


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
    os.replace(tmp, latest)


def _replace_with_copy(run_dir: Path, latest: Path) -> None:
    staging = latest.with_name(".latest.copy")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(run_dir, staging)
    shutil.rmtree(latest, ignore_errors=True)
    os.replace(staging, latest)
