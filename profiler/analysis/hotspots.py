"""Reduce a Scalene JSON profile to hotspots: the top functions and lines by CPU and by memory.

Scalene's CPU fields are percentages of all the CPU time it sampled: `n_cpu_percent_python`
(running Python), `n_cpu_percent_c` (in native code called from that line) and `n_sys_percent`
(the part of that time the process was off the CPU: system calls, I/O, waiting). Memory fields
are sampled MB: `n_peak_mb` is the most the line held live at once, `n_malloc_mb` all it
allocated, and `n_copy_mb_s` the rate of memory copying it caused.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MB = 1024 * 1024
NAME_CHARS = 80
VIEW_TIMEOUT_S = 300
GZIP_MAGIC = b"\x1f\x8b"

# First match wins, against "path:function" with "/" separators. The stages follow the stages
# study: copying the batch to the device counts with tokenization, and every module after the
# transformer counts as pooling.
STAGE_RULES: tuple[tuple[str, str], ...] = (
    ("/scalene/", "profiler"),
    ("/profiler/measure/", "profiler"),
    ("/profiler/studies/base.py:Profiling.", "profiler"),  # switching Scalene on and off
    # waiting, not work: Scalene credits an idle process's samples to a sleeping line (the
    # serving study waits for arrivals; the build watcher sleeps all the time)
    ("/profiler/runner/lifetime.py", "profiler"),
    ("/profiler/serving/engine.py:WallClock.", "profiler"),
    ("/tokenizers/", "tokenize"),
    ("/tokenization_", "tokenize"),
    ("/modules/tokenizer/", "tokenize"),
    (".tokenize", "tokenize"),
    (".preprocess", "tokenize"),
    (":batch_to_device", "tokenize"),
    (":_tensor_to_numpy", "output"),
    ("sentence_transformer/model.py:SentenceTransformer.encode", "output"),
    ("/pooling.py", "pooling"),
    ("/modules/normalize.py", "pooling"),
    ("/modules/dense.py", "pooling"),
    ("/transformers/", "forward"),
    ("/torch/nn/", "forward"),
    ("sentence_transformers/base/modules/transformer.py", "forward"),
    ("sentence_transformers/base/model.py:BaseModel.forward", "forward"),
)

EXCLUDED_WHY = {
    "scalene": "Scalene's own code",
    "stdlib": "Python's standard library (threading, queues, selectors, import machinery)",
    "measurement": "this profiler's timers, memory sampler, build watcher and the serving "
                   "study's wait for arrivals (idle time)",
    "import": "import statements and module-level code run at import time",
}
STDLIB_PATH = re.compile(r"/lib/python\d+(\.\d+)?t?/(?!site-packages/|dist-packages/)")
# Greedy: the match ends at the last package root in the path.
LOCAL_STDLIB = sysconfig.get_paths()["stdlib"].replace("\\", "/").rstrip("/") + "/"
PACKAGE_ROOT = re.compile(r".*/(site-packages|dist-packages|lib/python\d+(\.\d+)?t?)/")
HEADER = re.compile(r"\s*(?:async\s+)?(def|class)\s+(\w+)")
IMPORT_LINE = re.compile(r"(import\s|from\s+\S+\s+import\b)")
# Scalene escapes these in source text so the profile can sit inside a <script> tag.
SCALENE_ESCAPES = (("\\u003c", "<"), ("\\u003e", ">"), ("\\u0026", "&"))
# A line or function with any of these truthy did something Scalene measured; the rest of a
# file's lines (nearly all of them) are zero and only make the standalone page big.
ACTIVITY_FIELDS = (
    "n_cpu_percent_python", "n_cpu_percent_c", "n_sys_percent",
    "n_peak_mb", "n_avg_mb", "n_malloc_mb", "n_growth_mb", "n_mallocs", "n_copy_mb_s",
    "n_gpu_percent", "n_gpu_peak_memory_mb", "n_gpu_avg_memory_mb", "n_async_await_percent",
    "nc_time_ms", "nrt_time_ms", "nrt_percent", "memory_samples", "cpu_samples_list",
)
# Parts of a profile the standalone page can do without: `stacks` is not read by Scalene's
# viewer; `combined_stacks` (2 MB for one study) only feeds its call-stack flame chart and
# timeline, which it leaves out when empty, and the timeline points into it by index.
UNVIEWED = ("stacks", "combined_stacks", "combined_stacks_timeline")


@dataclass(frozen=True)
class Hotspot:
    """One function or line of a profile: where it is, its encode stage, its CPU and memory."""

    file: str
    path: str
    line: int
    name: str
    function: str
    stage: str
    cpu_python_pct: float
    cpu_native_pct: float
    cpu_system_pct: float
    cpu_total_pct: float
    peak_mb: float
    alloc_mb: float
    copy_mb_s: float

    @property
    def active(self) -> bool:
        """Whether Scalene saw this row use any CPU or memory."""
        return self.cpu_total_pct > 0 or self.peak_mb > 0 or self.alloc_mb > 0


def load_profile(path: Path) -> dict[str, Any]:
    """Read a Scalene JSON profile, gzipped or plain."""
    with path.open("rb") as stream:
        gzipped = stream.read(2) == GZIP_MAGIC
    with (gzip.open(path, "rt", encoding="utf-8") if gzipped
          else path.open(encoding="utf-8")) as stream:
        profile: dict[str, Any] = json.load(stream)
    return profile


def stage_of(path: str, name: str) -> str:
    """Return the encode stage of a frame from its file path and function name."""
    key = path.replace("\\", "/") + ":" + name
    return next((stage for part, stage in STAGE_RULES if part in key), "other")


def short_path(path: str, root: str = "") -> str:
    """Return `path` from its package on: after site-packages or the stdlib, else below `root`."""
    path = path.replace("\\", "/")
    found = PACKAGE_ROOT.match(path)
    if found:
        return path[found.end():]
    prefix = root.replace("\\", "/").rstrip("/") + "/"
    return path[len(prefix):] if root and path.startswith(prefix) else path


def exclusion_reason(hotspot: Hotspot, import_time: bool = False) -> str | None:
    """Return why a row is left out of the rankings (a key of EXCLUDED_WHY), or None."""
    path = hotspot.path.replace("\\", "/")
    if "/scalene/" in path:
        return "scalene"
    if is_stdlib(path):
        return "stdlib"
    if hotspot.stage == "profiler":
        return "measurement"
    # A decorator line also collects the entry into its function at run time: keep it.
    if IMPORT_LINE.match(hotspot.name) or (import_time and not hotspot.name.startswith("@")):
        return "import"
    return None


def is_stdlib(path: str) -> bool:
    """Whether `path` is Python's standard library (or frozen import machinery)."""
    stdlib = LOCAL_STDLIB
    in_local_stdlib = path.startswith(stdlib) and "-packages/" not in path[len(stdlib):]
    return path.startswith("<frozen ") or in_local_stdlib or bool(STDLIB_PATH.search(path))


@dataclass
class Collected:
    """The rows of a profile sorted into kept functions, kept lines, left-out lines and leaks."""

    root: str
    functions: list[Hotspot] = field(default_factory=list)
    lines: list[Hotspot] = field(default_factory=list)
    left_out: list[tuple[Hotspot, str]] = field(default_factory=list)
    leaks: list[dict[str, Any]] = field(default_factory=list)

    def add_file(self, path: str, detail: dict[str, Any]) -> None:
        """Sort one file's functions, lines and leaks."""
        every = file_lines(path, detail, self.root)
        for hotspot, import_time in every.values():
            if not hotspot.active:
                continue
            reason = exclusion_reason(hotspot, import_time)
            if reason:
                self.left_out.append((hotspot, reason))
            else:
                self.lines.append(hotspot)
        self.functions += [h for h in file_functions(path, detail, self.root)
                           if not exclusion_reason(h)]
        self.leaks += file_leaks(path, detail, every, self.root)


def reduce_profile(profile: dict[str, Any], top: int = 10) -> dict[str, Any]:
    """Return the top functions and lines by CPU and by memory, with their stage."""
    entrypoint = profile.get("entrypoint_dir")
    collected = Collected(root=str(Path(entrypoint).parent) if entrypoint else "")
    for path, detail in profile.get("files", {}).items():
        collected.add_file(path, detail)
    by_likelihood = sorted(collected.leaks,
                           key=lambda leak: (-leak["likelihood"], -leak["velocity_mb_s"]))
    return headline(profile) | {
        "cpu_functions": rows(rank_cpu(collected.functions)[:top]),
        "cpu_lines": rows(rank_cpu(collected.lines)[:top]),
        "memory_lines": rows(rank_memory(collected.lines)[:top]),
        "leaks": by_likelihood[:top],
        "excluded": excluded(collected.left_out),
    }


def headline(profile: dict[str, Any]) -> dict[str, Any]:
    """Return the whole-run figures: elapsed time, peak footprint and its growth rate."""
    summary = {"elapsed_s": float(profile.get("elapsed_time_sec", 0.0)),
               "max_footprint_mb": float(profile.get("max_footprint_mb", 0.0))}
    if profile.get("growth_rate") is not None:
        summary["growth_rate_pct"] = float(profile["growth_rate"])
    return summary


def file_lines(path: str, detail: dict[str, Any],
               root: str) -> dict[int, tuple[Hotspot, bool]]:
    """Return a file's lines by number, each with whether it runs at import time."""
    texts = {entry["lineno"]: entry["line"] for entry in detail.get("lines", [])}
    functions = sorted((entry["lineno"], entry["line"]) for entry in detail.get("functions", []))
    every = {}
    for entry in detail.get("lines", []):
        function, import_time = enclosing(entry, texts, functions)
        hotspot = make_hotspot(path, entry, source_text(entry["line"]), function, root)
        every[hotspot.line] = (hotspot, import_time)
    return every


def file_functions(path: str, detail: dict[str, Any], root: str) -> list[Hotspot]:
    """Return a file's active functions as hotspots named by their qualified name."""
    made = (make_hotspot(path, entry, entry["line"], entry["line"], root)
            for entry in detail.get("functions", []))
    return [hotspot for hotspot in made if hotspot.active]


def enclosing(entry: dict[str, Any], texts: dict[int, str],
              functions: list[tuple[int, str]]) -> tuple[str, bool]:
    """Return the function around a line and whether the line runs at import time."""
    start = int(entry.get("start_function_line", 0))
    if start == 0:  # Scalene's mark for module level
        return "", True
    header = HEADER.match(texts.get(start, ""))
    if header is None:
        return "", False
    kind, name = header.groups()
    if kind == "class":  # a class body runs once, when its module is imported
        return name, True
    known = [qualified for lineno, qualified in functions
             if (qualified == name or qualified.endswith("." + name))
             and opens_def(lineno, start, texts)]
    return (known[-1] if known else name), False


def opens_def(lineno: int, start: int, texts: dict[int, str]) -> bool:
    """Whether a function that Scalene starts at `lineno` is the one defined at `start`."""
    if lineno == start:
        return True
    # Scalene starts a decorated function at its first decorator, above the def.
    return (lineno < start and texts.get(lineno, "").lstrip().startswith("@")
            and not any(HEADER.match(texts.get(n, "")) for n in range(lineno + 1, start)))


def make_hotspot(path: str, entry: dict[str, Any], name: str, function: str,
                 root: str) -> Hotspot:
    """Build a hotspot from one Scalene line or function entry."""
    split = [float(entry.get(key, 0.0)) for key in
             ("n_cpu_percent_python", "n_cpu_percent_c", "n_sys_percent")]
    return Hotspot(
        file=short_path(path, root), path=path, line=int(entry["lineno"]),
        name=truncate(name), function=function, stage=stage_of(path, function),
        cpu_python_pct=split[0], cpu_native_pct=split[1], cpu_system_pct=split[2],
        cpu_total_pct=sum(split), peak_mb=float(entry.get("n_peak_mb", 0.0)),
        alloc_mb=float(entry.get("n_malloc_mb", 0.0)),
        copy_mb_s=float(entry.get("n_copy_mb_s", 0.0)))


def truncate(text: str) -> str:
    """Return `text` cut to NAME_CHARS characters, with an ellipsis when cut."""
    return text if len(text) <= NAME_CHARS else text[:NAME_CHARS - 1] + "…"


def source_text(line: str) -> str:
    """Return a source line stripped, with Scalene's HTML-safe escapes undone."""
    for escaped, plain in SCALENE_ESCAPES:
        line = line.replace(escaped, plain)
    return line.strip()


def rank_cpu(hotspots: list[Hotspot]) -> list[Hotspot]:
    """Return the hotspots that used CPU, most total CPU first."""
    used = [h for h in hotspots if h.cpu_total_pct > 0]
    return sorted(used, key=lambda h: (-h.cpu_total_pct, h.path, h.line))


def rank_memory(hotspots: list[Hotspot]) -> list[Hotspot]:
    """Return the hotspots that allocated memory, highest peak first, then most allocated."""
    used = [h for h in hotspots if h.peak_mb > 0 or h.alloc_mb > 0]
    return sorted(used, key=lambda h: (-h.peak_mb, -h.alloc_mb, h.path, h.line))


def rows(hotspots: list[Hotspot]) -> list[dict[str, Any]]:
    """Return hotspots as plain dicts with numbers rounded for display."""
    return [{key: round(value, 3) if isinstance(value, float) else value
             for key, value in asdict(h).items()} for h in hotspots]


def file_leaks(path: str, detail: dict[str, Any], every: dict[int, tuple[Hotspot, bool]],
               root: str) -> list[dict[str, Any]]:
    """Return the likely leaks Scalene found in a file, outside excluded code."""
    found = []
    for lineno, leak in detail.get("leaks", {}).items():
        unknown = make_hotspot(path, {"lineno": lineno}, "", "", root)
        hotspot, import_time = every.get(int(lineno), (unknown, False))
        if exclusion_reason(hotspot, import_time):
            continue
        found.append({"file": hotspot.file, "path": path, "line": hotspot.line,
                      "name": hotspot.name, "function": hotspot.function, "stage": hotspot.stage,
                      "likelihood": round(float(leak["likelihood"]), 3),
                      "velocity_mb_s": round(float(leak["velocity_mb_s"]), 3)})
    return found


def excluded(left_out: list[tuple[Hotspot, str]]) -> dict[str, Any]:
    """Summarise the active lines left out of the rankings, in total and by reason."""
    by_reason: dict[str, dict[str, Any]] = {}
    for hotspot, reason in left_out:
        share = by_reason.setdefault(reason, {"cpu_percent": 0.0, "rows": 0})
        share["cpu_percent"] += hotspot.cpu_total_pct
        share["rows"] += 1
    for share in by_reason.values():
        share["cpu_percent"] = round(share["cpu_percent"], 3)
    why = "; ".join(EXCLUDED_WHY[reason] for reason in EXCLUDED_WHY if reason in by_reason)
    return {"cpu_percent": round(float(sum(h.cpu_total_pct for h, _ in left_out)), 3),
            "rows": len(left_out), "why": why or "nothing was left out",
            "by_reason": by_reason}


def standalone_html(profile_json: Path, out_html: Path, max_mb: float = 5.0) -> Path | None:
    """Write Scalene's own viewer with the profile as one offline HTML file; None if not."""
    try:
        profile = load_profile(profile_json)
    except (OSError, EOFError, ValueError):
        out_html.unlink(missing_ok=True)
        return None
    return write_standalone(profile, out_html, max_mb)


def write_standalone(profile: dict[str, Any], out_html: Path,
                     max_mb: float = 5.0) -> Path | None:
    """Write Scalene's viewer for a loaded profile; None if it fails or exceeds `max_mb`."""
    with tempfile.TemporaryDirectory(prefix="scalene-view-") as tmp:
        page = render_standalone(profile, Path(tmp))
        if page is None or page.stat().st_size > max_mb * MB:
            out_html.unlink(missing_ok=True)  # never leave an older profile's page behind
            return None
        out_html.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(page, out_html)
    return out_html


def render_standalone(profile: dict[str, Any], work: Path) -> Path | None:
    """Run `scalene view --standalone` in `work`; return the page, or None if it failed."""
    # Scalene embeds the JSON text verbatim and its own files are indented: compact is half.
    (work / "profile.json").write_text(json.dumps(slim_profile(profile), separators=(",", ":")),
                                       encoding="utf-8")
    # --standalone only writes scalene-profile.html into the working directory; it never
    # starts a browser or a server.
    command = [sys.executable, "-m", "scalene", "view", "--standalone", "profile.json"]
    try:
        done = subprocess.run(command, cwd=work, capture_output=True, text=True,
                              timeout=VIEW_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    page = work / "scalene-profile.html"
    return page if done.returncode == 0 and page.is_file() else None


def slim_profile(profile: dict[str, Any]) -> dict[str, Any]:
    """Return the profile for Scalene's viewer with only the lines and functions that did work."""
    files = {}
    for path, detail in profile.get("files", {}).items():
        lines = [alone(entry) for entry in detail.get("lines", []) if is_active(entry)]
        if lines:
            functions = [entry for entry in detail.get("functions", []) if is_active(entry)]
            files[path] = detail | {"lines": lines, "functions": functions}
    return profile | {key: [] for key in UNVIEWED} | {"files": files}


def is_active(entry: dict[str, Any]) -> bool:
    """Whether Scalene measured any CPU, memory, copying or GPU use on a line or function."""
    return any(entry.get(key) for key in ACTIVITY_FIELDS)


def alone(line: dict[str, Any]) -> dict[str, Any]:
    """Return a line entry as a region of its own."""
    # The viewer reads a region's lines as `lines[lineno]`, by position in the list, which is
    # only right while every line of the file is listed; in a slim list it reads past the end.
    return line | {"start_region_line": line["lineno"], "end_region_line": line["lineno"]}


AGREE_PP = 5.0  # percentage points two profiles may differ by and still agree


def cross_check(functions: list[dict[str, Any]], reference: dict[str, Any] | None
                ) -> dict[str, Any] | None:
    """Scalene's top functions beside the independent profile's share of the same function.

    A function agrees when the two shares differ by at most AGREE_PP points (or a quarter of the
    larger); the rest are marked, with the direction of Scalene's error.
    """
    if not reference or not functions:
        return None
    rows = [_checked(f, _match(f, reference["functions"])) for f in functions]
    agree = sum(row["agrees"] for row in rows)
    return {"tool": reference["tool"], "what": reference["what"], "rows": rows,
            "agree": agree, "total": len(rows), "tolerance_pp": AGREE_PP}


def _match(function: dict[str, Any], found: list[dict[str, Any]]) -> dict[str, Any] | None:
    name = str(function["function"]).rsplit(".", 1)[-1]
    same = [r for r in found if r["path"] == function["path"] and r["function"] == name]
    return min(same, key=lambda r: abs(r["line"] - function["line"])) if same else None


def _checked(function: dict[str, Any], match: dict[str, Any] | None) -> dict[str, Any]:
    scalene = float(function["cpu_total_pct"])
    other = float(match["pct"]) if match else 0.0
    agrees = abs(scalene - other) <= max(AGREE_PP, 0.25 * max(scalene, other))
    verdict = "agree" if agrees else ("Scalene credits more" if scalene > other
                                     else "Scalene credits less")
    return {"file": function["file"], "line": function["line"], "name": function["name"],
            "stage": function.get("stage"), "scalene_pct": scalene, "reference_pct": other,
            "agrees": agrees, "verdict": verdict}
