"""Hotspots from a trimmed real Scalene profile, and Scalene's own viewer as one HTML file.

tests/data/scalene_profile.json is a real profile of all-MiniLM-L6-v2 encoding (batch_size study)
cut down to a few files and lines, plus rows a real run produces that the rankings must leave
out: a threading.py waiter, Scalene's Thread.join replacement, the RSS sampler thread, an import
and a module-level statement, and Scalene leak reports.
"""

from __future__ import annotations

import copy
import gzip
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from scalene.scalene_json import ScaleneJSONSchema

from profiler.analysis.hotspots import (
    MB,
    load_profile,
    reduce_profile,
    short_path,
    slim_profile,
    stage_of,
    standalone_html,
)

PROFILE = Path(__file__).parent / "data" / "scalene_profile.json"
SITE = "/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/"
ST = SITE + "sentence_transformers/"
ROW_KEYS = {"file", "path", "line", "name", "function", "stage", "cpu_python_pct",
            "cpu_native_pct", "cpu_system_pct", "cpu_total_pct", "peak_mb", "alloc_mb",
            "copy_mb_s"}


@pytest.fixture(scope="module")
def profile() -> dict[str, Any]:
    """The trimmed real profile."""
    return load_profile(PROFILE)


@pytest.fixture(scope="module")
def reduced(profile: dict[str, Any]) -> dict[str, Any]:
    """The profile reduced with room for every row."""
    return reduce_profile(profile, top=100)


def all_rows(reduced: dict[str, Any]) -> list[dict[str, Any]]:
    """Every ranked row of a reduction."""
    return reduced["cpu_functions"] + reduced["cpu_lines"] + reduced["memory_lines"]


def one_file(path: str, *lines: dict[str, Any]) -> dict[str, Any]:
    """A profile of one file whose lines are real entries with some fields changed."""
    base = load_profile(PROFILE)
    real = base["files"][SITE + "torch/nn/modules/linear.py"]["lines"][0]
    idle: dict[str, Any] = {key: 0 for key in real if key.startswith("n_")} | {
        "memory_samples": [], "cpu_samples_list": []}
    entries = [copy.deepcopy(real) | idle | changes for changes in lines]
    detail = {"functions": [], "imports": [], "leaks": {}, "lines": entries,
              "percent_cpu_time": 1.0}
    return {key: value for key, value in base.items() if key != "files"} | {
        "files": {path: detail}}


def test_cpu_lines_rank_by_total_cpu_with_the_real_split(reduced: dict[str, Any]) -> None:
    lines = reduced["cpu_lines"]
    totals = [row["cpu_total_pct"] for row in lines]
    assert totals == sorted(totals, reverse=True) and totals[-1] > 0
    first = lines[0]
    assert (first["file"], first["line"], first["function"], first["stage"]) == (
        "torch/nn/modules/linear.py", 134, "Linear.forward", "forward")
    assert first["name"] == "return F.linear(input, self.weight, self.bias)"
    # Scalene's own numbers for this line: 78.954 native, 0.110 system, no Python.
    assert (first["cpu_python_pct"], first["cpu_native_pct"], first["cpu_system_pct"]) == (
        0.0, 78.954, 0.11)
    for row in lines:
        split = row["cpu_python_pct"] + row["cpu_native_pct"] + row["cpu_system_pct"]
        assert split == pytest.approx(row["cpu_total_pct"], abs=0.002)
        assert set(row) == ROW_KEYS


def test_cpu_functions_rank_by_total_cpu(reduced: dict[str, Any]) -> None:
    functions = reduced["cpu_functions"]
    names = [row["name"] for row in functions]
    assert names[:4] == ["Linear.forward", "GELUActivation.forward", "sdpa_attention_forward",
                         "Module._call_impl"]
    assert functions[0]["cpu_total_pct"] == pytest.approx(79.195, abs=0.001)
    assert all(row["function"] == row["name"] for row in functions)
    study = functions[names.index("Workload._encode")]
    assert (study["file"], study["stage"]) == ("profiler/studies/batch_size.py", "other")


def test_memory_lines_rank_by_peak_and_drop_lines_without_memory(
        reduced: dict[str, Any], profile: dict[str, Any]) -> None:
    memory = reduced["memory_lines"]
    keys = [(row["peak_mb"], row["alloc_mb"]) for row in memory]
    assert keys == sorted(keys, reverse=True)
    assert all(peak > 0 or alloc > 0 for peak, alloc in keys)
    first = memory[0]
    assert (first["file"], first["line"]) == ("transformers/models/bert/modeling_bert.py", 350)
    assert first["peak_mb"] == round(profile["max_footprint_mb"], 3) == 171.199
    # Line 350 sits in BertOutput.forward, which has no function entry of its own: the
    # function before it (BertAttention.forward) must not be borrowed.
    assert first["function"] == "forward"
    # CPU-only rows stay out of the memory ranking.
    assert "Module._call_impl" not in {row["function"] for row in memory}


def test_memory_ties_on_peak_go_to_the_larger_allocation() -> None:
    path = SITE + "torch/nn/functional.py"
    reduced = reduce_profile(one_file(
        path,
        {"lineno": 10, "line": "    a = f()\n", "n_peak_mb": 2.0, "n_malloc_mb": 5.0},
        {"lineno": 11, "line": "    b = g()\n", "n_peak_mb": 2.0, "n_malloc_mb": 9.0},
        {"lineno": 12, "line": "    c = h()\n", "n_peak_mb": 0.0, "n_malloc_mb": 0.0,
         "n_cpu_percent_c": 4.0}))
    assert [row["line"] for row in reduced["memory_lines"]] == [11, 10]
    assert [row["line"] for row in reduced["cpu_lines"]] == [12]


def test_top_cuts_every_list(reduced: dict[str, Any], profile: dict[str, Any]) -> None:
    three = reduce_profile(profile, top=3)
    for key in ("cpu_functions", "cpu_lines", "memory_lines"):
        assert three[key] == reduced[key][:3]
    assert three["leaks"] == reduced["leaks"][:3]


def test_plumbing_and_import_time_are_left_out_and_counted(reduced: dict[str, Any]) -> None:
    for row in all_rows(reduced):
        assert not row["file"].startswith(("threading.py", "scalene/", "profiler/measure/"))
        assert not row["name"].startswith(("import ", "logger = "))
    excluded = reduced["excluded"]
    assert excluded["by_reason"] == {
        "stdlib": {"cpu_percent": 2.4, "rows": 1},
        "scalene": {"cpu_percent": 1.3, "rows": 1},
        "measurement": {"cpu_percent": 0.9, "rows": 1},
        "import": {"cpu_percent": 1.98, "rows": 2},
    }
    assert (excluded["cpu_percent"], excluded["rows"]) == (6.58, 5)
    assert "threading" in excluded["why"] and "Scalene" in excluded["why"]
    # The threading waiter would otherwise be the fifth line: leaving it out matters.
    assert reduced["cpu_lines"][4]["cpu_total_pct"] < excluded["by_reason"]["stdlib"]["cpu_percent"]


def test_nothing_left_out_says_so() -> None:
    reduced = reduce_profile(one_file(SITE + "torch/nn/functional.py",
                                      {"lineno": 5, "line": "    x = y\n", "n_cpu_percent_c": 1.0,
                                       "start_function_line": 4}))
    assert reduced["excluded"] == {"cpu_percent": 0.0, "rows": 0, "why": "nothing was left out",
                                   "by_reason": {}}


def test_class_bodies_are_import_time_but_decorators_are_not() -> None:
    lines = [
        {"lineno": 1, "line": "class Cache:\n", "start_function_line": 1},
        {"lineno": 2, "line": "    table = build_table()\n", "start_function_line": 1,
         "n_cpu_percent_python": 2.0},
        {"lineno": 3, "line": "@lru_cache\n", "start_function_line": 0,
         "n_cpu_percent_python": 1.0},
        {"lineno": 4, "line": "def lookup(key):\n", "start_function_line": 4},
        {"lineno": 5, "line": "    return TABLE[key]\n", "start_function_line": 4,
         "n_cpu_percent_python": 0.5},
        {"lineno": 6, "line": "    from .tables import TABLE\n", "start_function_line": 4,
         "n_cpu_percent_python": 0.7},
    ]
    reduced = reduce_profile(one_file(SITE + "transformers/utils/cache.py", *lines))
    assert [row["line"] for row in reduced["cpu_lines"]] == [3, 5]
    assert reduced["cpu_lines"][1]["function"] == "lookup"
    assert reduced["excluded"]["by_reason"] == {"import": {"cpu_percent": 2.7, "rows": 2}}


def test_source_text_is_unescaped_and_truncated(reduced: dict[str, Any]) -> None:
    by_place = {(row["file"], row["line"]): row["name"] for row in reduced["cpu_lines"]}
    assert by_place[("torch/nn/modules/linear.py", 130)] == (
        "def forward(self, input: Tensor) -> Tensor:")
    long = by_place[("torch/nn/modules/module.py", 1783)]
    assert len(long) == 80 and long.endswith("…")
    assert long.startswith("forward_call = (self._slow_forward if torch._C._get_tracing_state()")


def test_decorated_functions_keep_their_qualified_name(reduced: dict[str, Any]) -> None:
    # Scalene starts BaseModel._resolve_inference_device at its decorator (line 1676).
    row = next(r for r in reduced["cpu_lines"] if r["line"] == 1706)
    assert (row["function"], row["stage"]) == ("BaseModel._resolve_inference_device", "other")


def test_stages_of_the_sample_rows(reduced: dict[str, Any]) -> None:
    stages = {(row["file"], row["line"]): row["stage"] for row in reduced["cpu_lines"]}
    assert stages[("transformers/tokenization_utils_tokenizers.py", 1091)] == "tokenize"
    assert stages[("transformers/tokenization_utils_base.py", 698)] == "tokenize"
    assert stages[("sentence_transformers/util/tensor.py", 332)] == "tokenize"
    assert stages[("transformers/activations.py", 89)] == "forward"
    assert stages[("sentence_transformers/sentence_transformer/modules/pooling.py", 209)] == (
        "pooling")


@pytest.mark.parametrize(("path", "name", "stage"), [
    (SITE + "tokenizers/implementations/base_tokenizer.py", "BaseTokenizer.encode_batch",
     "tokenize"),
    (SITE + "transformers/models/bert/tokenization_bert_fast.py", "BertTokenizerFast.__init__",
     "tokenize"),
    (ST + "base/modules/transformer.py", "Transformer.preprocess", "tokenize"),
    (ST + "base/model.py", "BaseModel.tokenize", "tokenize"),
    (ST + "util/tensor.py", "batch_to_device", "tokenize"),
    (ST + "base/modules/transformer.py", "Transformer.forward", "forward"),
    (ST + "base/model.py", "BaseModel.forward", "forward"),
    (SITE + "transformers/models/bert/modeling_bert.py", "BertLayer.forward", "forward"),
    (SITE + "torch/nn/modules/linear.py", "Linear.forward", "forward"),
    (ST + "sentence_transformer/modules/pooling.py", "Pooling.forward", "pooling"),
    (ST + "base/modules/normalize.py", "Normalize.forward", "pooling"),
    (ST + "util/tensor.py", "_tensor_to_numpy", "output"),
    (ST + "sentence_transformer/model.py", "SentenceTransformer.encode", "output"),
    (ST + "sentence_transformer/model.py", "SentenceTransformer._inference", "other"),
    (ST + "base/model.py", "BaseModel._resolve_inference_device", "other"),
    ("/work/main/profiler/measure/memory.py", "PeakRss._sample", "profiler"),
    (SITE + "scalene/replacement_thread_join.py", "thread_join_replacement", "profiler"),
    ("/work/main/profiler/studies/batch_size.py", "Workload._encode", "other"),
    (SITE + "numpy/_core/fromnumeric.py", "argsort", "other"),
    ("C:\\venv\\Lib\\site-packages\\torch\\nn\\modules\\linear.py", "Linear.forward", "forward"),
])
def test_stage_of_known_frames(path: str, name: str, stage: str) -> None:
    assert stage_of(path, name) == stage


@pytest.mark.parametrize(("path", "root", "short"), [
    (SITE + "transformers/models/bert/modeling_bert.py", "",
     "transformers/models/bert/modeling_bert.py"),
    ("/usr/lib/python3.11/threading.py", "", "threading.py"),
    ("/usr/lib/python3/dist-packages/numpy/linalg.py", "", "numpy/linalg.py"),
    ("/work/main/profiler/studies/stages.py", "/work/main", "profiler/studies/stages.py"),
    ("/work/main/.venv/lib/python3.11/site-packages/torch/nn/functional.py", "/work/main",
     "torch/nn/functional.py"),
    ("/elsewhere/run.py", "/work/main", "/elsewhere/run.py"),
])
def test_short_paths(path: str, root: str, short: str) -> None:
    assert short_path(path, root) == short


def test_leaks_outside_plumbing_most_likely_first(reduced: dict[str, Any]) -> None:
    leaks = reduced["leaks"]
    assert [(leak["file"], leak["line"]) for leak in leaks] == [
        ("transformers/models/bert/modeling_bert.py", 350),
        ("transformers/integrations/sdpa_attention.py", 193)]
    assert leaks[0]["likelihood"] == 0.958 and leaks[0]["velocity_mb_s"] == 4.131
    assert leaks[0]["stage"] == "forward"
    assert {"file", "line", "likelihood", "velocity_mb_s", "stage"} <= set(leaks[0])


def test_headline_figures(reduced: dict[str, Any]) -> None:
    assert reduced["elapsed_s"] == pytest.approx(4.7262, abs=1e-4)
    assert reduced["max_footprint_mb"] == pytest.approx(171.1989, abs=1e-4)
    assert reduced["growth_rate_pct"] == pytest.approx(4.869, abs=1e-3)
    without = reduce_profile({"elapsed_time_sec": 1.0, "max_footprint_mb": 2.0, "files": {}})
    assert "growth_rate_pct" not in without and without["cpu_lines"] == []


def test_reduction_is_plain_json(reduced: dict[str, Any]) -> None:
    assert json.loads(json.dumps(reduced)) == reduced


def test_gzipped_profile_loads_the_same(tmp_path: Path, profile: dict[str, Any]) -> None:
    packed = tmp_path / "batch_size.json.gz"
    packed.write_bytes(gzip.compress(PROFILE.read_bytes()))
    assert load_profile(packed) == profile


def test_standalone_html_is_one_offline_file(tmp_path: Path) -> None:
    packed = tmp_path / "batch_size.json.gz"
    packed.write_bytes(gzip.compress(PROFILE.read_bytes()))
    out = tmp_path / "site" / "scalene.html"
    assert standalone_html(packed, out) == out
    page = out.read_text(encoding="utf-8")
    assert "transformers/models/bert/modeling_bert.py" in page
    # Scalene pastes the JSON text in as it is: compact JSON keeps the page half the size.
    assert '"elapsed_time_sec":4.726' in page
    # Everything is inline: no script, stylesheet or image is fetched from elsewhere.
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=[\"']?(https?:)?//", page)
    assert "googletagmanager" not in page
    assert out.stat().st_size < 5 * MB


def test_standalone_html_too_big_or_failing_gives_none(tmp_path: Path) -> None:
    out = tmp_path / "scalene.html"
    out.write_text("a page from an older run", encoding="utf-8")
    assert standalone_html(PROFILE, out, max_mb=0.01) is None
    assert not out.exists()
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    assert standalone_html(broken, out) is None
    assert standalone_html(tmp_path / "missing.json", out) is None
    assert not out.exists()


def measured(entry: dict[str, Any]) -> bool:
    """Whether a Scalene line or function entry has any CPU, memory, copy or GPU figure."""
    return any(entry[key] for key in (
        "n_cpu_percent_python", "n_cpu_percent_c", "n_sys_percent", "n_peak_mb", "n_malloc_mb",
        "n_growth_mb", "n_mallocs", "n_copy_mb_s", "n_gpu_percent"))


def test_slim_profile_keeps_the_active_lines_and_functions_only(profile: dict[str, Any]) -> None:
    before = copy.deepcopy(profile)
    slim = slim_profile(profile)
    assert profile == before
    assert set(slim["files"]) == set(profile["files"])  # every fixture file did something
    for path, detail in profile["files"].items():
        kept = slim["files"][path]
        assert [e["lineno"] for e in kept["lines"]] == [
            e["lineno"] for e in detail["lines"] if measured(e)]
        assert kept["functions"] == [e for e in detail["functions"] if measured(e)]
        for line, original in zip(kept["lines"], (e for e in detail["lines"] if measured(e)),
                                   strict=True):
            # Each line is its own region: the viewer reads regions by position in the list.
            assert line["start_region_line"] == line["end_region_line"] == line["lineno"]
            assert {k: v for k, v in line.items() if not k.endswith("_region_line")} == {
                k: v for k, v in original.items() if not k.endswith("_region_line")}
        assert (kept["imports"], kept["leaks"]) == (detail["imports"], detail["leaks"])
    # The header line of tokenizers' encode_batch path did nothing itself: it goes.
    tokenizers = SITE + "transformers/tokenization_utils_tokenizers.py"
    assert [e["lineno"] for e in slim["files"][tokenizers]["lines"]] == [940, 1091]


def test_slim_profile_keeps_every_kind_of_activity_and_drops_idle_files() -> None:
    kinds = ("n_cpu_percent_python", "n_cpu_percent_c", "n_sys_percent", "n_peak_mb",
             "n_malloc_mb", "n_growth_mb", "n_mallocs", "n_copy_mb_s", "n_gpu_percent")
    busy = one_file(SITE + "torch/nn/functional.py",
                    {"lineno": 1, "line": "def f():\n"},
                    *({"lineno": n, "line": "    x()\n", kind: 1}
                      for n, kind in enumerate(kinds, start=2)),
                    {"lineno": 20, "line": "    return x\n"})
    idle = one_file(SITE + "torch/nn/idle.py", {"lineno": 1, "line": "import os\n"})
    frame = {"kind": "py", "display_name": "f", "filename_or_module": "f.py", "line": 2,
             "ip": None, "offset": None}
    stacked = busy | {"files": busy["files"] | idle["files"], "stacks": [["f.py f:2;", 3]],
                      "combined_stacks": [[[frame], 3]],
                      "combined_stacks_timeline": [{"t_sec": 0.0, "stack_index": 0, "count": 3}]}
    slim = slim_profile(stacked)
    assert list(slim["files"]) == [SITE + "torch/nn/functional.py"]
    assert [e["lineno"] for e in slim["files"][SITE + "torch/nn/functional.py"]["lines"]] == (
        list(range(2, 2 + len(kinds))))
    assert slim["stacks"] == slim["combined_stacks"] == slim["combined_stacks_timeline"] == []
    assert slim["samples"] == stacked["samples"]
    ScaleneJSONSchema(**slim)


def test_slim_profile_passes_scalenes_own_validation(profile: dict[str, Any]) -> None:
    ScaleneJSONSchema(**profile)
    ScaleneJSONSchema(**slim_profile(profile))


def test_standalone_page_is_smaller_than_scalenes_own(tmp_path: Path,
                                                      profile: dict[str, Any]) -> None:
    (tmp_path / "profile.json").write_text(json.dumps(profile, separators=(",", ":")),
                                           encoding="utf-8")
    subprocess.run([sys.executable, "-m", "scalene", "view", "--standalone", "profile.json"],
                   cwd=tmp_path, check=True, capture_output=True, timeout=300)
    whole = (tmp_path / "scalene-profile.html").stat().st_size
    page = standalone_html(PROFILE, tmp_path / "slim" / "scalene.html")
    assert page is not None
    # The fixture is already cut down to a few lines a file; its idle ones still come out.
    assert page.stat().st_size < whole


def test_scalene_writes_only_lines_with_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    from scalene.scalene_analysis import ScaleneAnalysis
    from scalene.scalene_json import ScaleneJSON
    from scalene.scalene_statistics import ScaleneStatistics

    from profiler.runner.scalene_output import trim_scalene_output

    whole = ScaleneJSON.output_profile_line
    for owner, name in ((ScaleneJSON, "output_profile_line"),
                        (ScaleneAnalysis, "get_native_imported_modules")):
        monkeypatch.setattr(owner, name, owner.__dict__[name])  # put back after the test
    assert trim_scalene_output() and trim_scalene_output()  # the pinned Scalene; once only
    stats = ScaleneStatistics()
    stats.cpu_stats.total_cpu_samples = 10
    stats.cpu_stats.cpu_samples_python["f.py"][3] = 4

    def line(number: int, write: Any = ScaleneJSON.output_profile_line,
             **extra: Any) -> dict[str, Any]:
        return write(ScaleneJSON(), fname="f.py", fname_print="f.py", line_no=number,
                     line="x = 1", stats=stats, profile_this_code=lambda name, at: True, **extra)

    assert line(3) == line(3, whole) and line(3)["n_sys_percent"]  # sampled: as before
    assert line(4, whole)["lineno"] == 4
    assert line(4) == {}  # never sampled: left out
    assert line(4, force_print=True)["lineno"] == 4  # a function's summary is always written
    assert ScaleneAnalysis.get_native_imported_modules("import numpy\n") == []
