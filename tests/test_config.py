"""Settings and Timing: validation, where values come from, and the saved form."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from profiler.config import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_MODEL,
    QUICK_TIMING,
    Settings,
    Timing,
    load_settings,
    read_config_file,
)
from profiler.errors import ProfilerError

# --- Timing ---------------------------------------------------------------------------------


def test_timing_defaults_are_valid() -> None:
    timing = Timing()
    assert timing.min_repeats <= timing.max_repeats
    assert timing.warmup_repeats >= 0


@pytest.mark.parametrize("field", ["min_repeats", "max_repeats", "texts_per_repeat",
                                   "overhead_rounds", "workload_repeats", "query_texts",
                                   "search_texts"])
@pytest.mark.parametrize("value", [0, -1, 2.0, "3", True, None])
def test_timing_counts_must_be_positive_ints(field: str, value: Any) -> None:
    kwargs = {field: value}
    if field == "min_repeats":  # keep max >= min out of the way
        kwargs["max_repeats"] = 50
    with pytest.raises(ProfilerError, match=rf"timing\.{field}"):
        Timing(**kwargs)


def test_timing_warmup_may_be_zero_but_not_negative_or_bool() -> None:
    assert Timing(warmup_repeats=0).warmup_repeats == 0
    with pytest.raises(ProfilerError, match=r"timing\.warmup_repeats"):
        Timing(warmup_repeats=-1)
    with pytest.raises(ProfilerError, match=r"timing\.warmup_repeats"):
        Timing(warmup_repeats=False)


@pytest.mark.parametrize("value", [-0.5, "3", None])
def test_timing_min_time_must_be_a_non_negative_number(value: Any) -> None:
    with pytest.raises(ProfilerError, match="min_time_s"):
        Timing(min_time_s=value)


def test_timing_min_time_accepts_zero_and_ints() -> None:
    assert Timing(min_time_s=0).min_time_s == 0
    assert Timing(min_time_s=2).min_time_s == 2


def test_timing_max_repeats_below_min_repeats_is_rejected() -> None:
    with pytest.raises(ProfilerError, match="max_repeats"):
        Timing(min_repeats=6, max_repeats=5)
    assert Timing(min_repeats=5, max_repeats=5).max_repeats == 5


# --- Settings -------------------------------------------------------------------------------


def test_settings_defaults() -> None:
    settings = Settings()
    assert settings.model == DEFAULT_MODEL
    assert settings.device == "auto"
    assert settings.batch_sizes == DEFAULT_BATCH_SIZES
    assert settings.timing == Timing()
    assert settings.quick is False
    assert settings.workload == "bulk"
    assert settings.request_size is None and settings.token_budget is None
    assert settings.trust_remote_code is False


@pytest.mark.parametrize("workload", ["bulk", "stream", "query"])
def test_settings_accepts_each_workload(workload: str) -> None:
    assert Settings(workload=workload).workload == workload


@pytest.mark.parametrize("workload", ["warp", "BULK", "", None, 1])
def test_settings_rejects_unknown_workload(workload: Any) -> None:
    with pytest.raises(ProfilerError, match="unknown workload"):
        Settings(workload=workload)


@pytest.mark.parametrize("name", ["request_size", "token_budget"])
@pytest.mark.parametrize("value", [0, -3, 2.5, "8", True])
def test_request_size_and_token_budget_must_be_positive_ints(name: str, value: Any) -> None:
    with pytest.raises(ProfilerError, match=name):
        Settings(**{name: value})
    assert getattr(Settings(**{name: 7}), name) == 7


@pytest.mark.parametrize("value", [0, -1.0, "2048", True, None])
def test_memory_budget_must_be_a_positive_number(value: Any) -> None:
    with pytest.raises(ProfilerError, match="memory_budget_mb"):
        Settings(memory_budget_mb=value)


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_trust_remote_code_must_be_a_bool(value: Any) -> None:
    with pytest.raises(ProfilerError, match="trust_remote_code"):
        Settings(trust_remote_code=value)


@pytest.mark.parametrize("value", ["yes", "true", 1, 0, None])
def test_scalene_html_must_be_a_bool(value: Any) -> None:
    with pytest.raises(ProfilerError, match=rf"scalene_html must be true or false, got {value!r}"):
        Settings(scalene_html=value)


def test_scalene_html_is_off_unless_asked(tmp_path: Path) -> None:
    assert Settings().scalene_html is False
    assert load_settings({}, tmp_path).scalene_html is False
    _write(tmp_path / "profiler.toml", "scalene-html = true\n")
    assert load_settings({}, tmp_path).scalene_html is True
    _write(tmp_path / "profiler.toml", "scalene_html = false\n")
    assert load_settings({"scalene_html": True}, tmp_path).scalene_html is True  # the flag wins


def test_a_non_bool_scalene_html_in_the_file_is_a_one_line_error(tmp_path: Path) -> None:
    _write(tmp_path / "profiler.toml", 'scalene_html = "yes"\n')
    with pytest.raises(ProfilerError) as raised:
        load_settings({}, tmp_path)
    assert str(raised.value) == "scalene_html must be true or false, got 'yes'"


def test_request_texts_default_to_the_whole_corpus_of_at_least_1000() -> None:
    assert Settings().request_texts(50) == 1000  # a small corpus is cycled up to 1,000 texts
    assert Settings().request_texts(4321) == 4321  # a large one is the request as it is
    assert Settings(quick=True).request_texts(4321) == 256
    assert Settings(request_size=3).request_texts(4321) == 3  # as set, even under --quick
    assert Settings(request_size=3, quick=True).request_texts(10) == 3


@pytest.mark.parametrize("sizes", [(0,), (-4,), (8, 0), (8.0,), ("8",), (True,), (16, False),
                                   (None,), ()])
def test_settings_rejects_bad_batch_sizes(sizes: tuple[Any, ...]) -> None:
    with pytest.raises(ProfilerError, match="batch"):
        Settings(batch_sizes=sizes)


def test_settings_accepts_positive_batch_sizes() -> None:
    assert Settings(batch_sizes=(1, 3, 512)).batch_sizes == (1, 3, 512)


@pytest.mark.parametrize("device", ["tpu", "CPU", "", "cuda:0", None])
def test_settings_rejects_unknown_device(device: Any) -> None:
    with pytest.raises(ProfilerError, match="device"):
        Settings(device=device)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "mps"])
def test_settings_accepts_known_devices(device: str) -> None:
    assert Settings(device=device).device == device


def test_settings_rejects_unknown_study() -> None:
    with pytest.raises(ProfilerError, match="nosuch"):
        Settings(studies=("nosuch",))
    assert Settings(studies=("batch_size",)).studies == ("batch_size",)


@pytest.mark.parametrize("model", ["", "   ", None, 5])
def test_settings_rejects_empty_model(model: Any) -> None:
    with pytest.raises(ProfilerError, match="model"):
        Settings(model=model)


@pytest.mark.parametrize("within", [-0.01, 1.0, 2])
def test_settings_recommend_within_out_of_range(within: float) -> None:
    with pytest.raises(ProfilerError, match="recommend_within"):
        Settings(recommend_within=within)


def test_settings_recommend_within_of_wrong_type_is_a_profiler_error() -> None:
    with pytest.raises(ProfilerError, match="recommend_within"):
        Settings.from_dict({"recommend_within": "x"})


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ProfilerError, match="'colour'"):
        Settings.from_dict({"colour": "blue"})
    with pytest.raises(ProfilerError, match=r"'timing\.warmup'"):
        Settings.from_dict({"timing": {"warmup": 1}})


def test_from_dict_rejects_non_list_batch_sizes_and_non_table_timing() -> None:
    with pytest.raises(ProfilerError, match="batch_sizes must be a list"):
        Settings.from_dict({"batch_sizes": "8,16"})
    with pytest.raises(ProfilerError, match="batch_sizes must be a list"):
        Settings.from_dict({"batch_sizes": 8})
    with pytest.raises(ProfilerError, match="timing"):
        Settings.from_dict({"timing": 3})


def test_to_dict_from_dict_round_trip() -> None:
    settings = Settings(model="some/model", device="cpu", corpus="texts.jsonl",
                        studies=("batch_size",), batch_sizes=(4, 2), scalene=False, quick=True,
                        recommend_within=0.1,
                        timing=Timing(warmup_repeats=0, min_time_s=0.5, min_repeats=2,
                                      max_repeats=4, texts_per_repeat=16, overhead_rounds=1))
    data = settings.to_dict()
    assert data["timing"]["min_repeats"] == 2
    assert Settings.from_dict(data) == settings
    # As saved in config.json: through JSON (tuples become lists) and with a schema_version.
    saved = json.loads(json.dumps({"schema_version": 1, **data}))
    assert Settings.from_dict(saved) == settings


def test_from_dict_does_not_mutate_its_input() -> None:
    data = {"device": "cpu", "timing": {"min_repeats": 1}, "batch_sizes": [2]}
    copy = json.loads(json.dumps(data))
    Settings.from_dict(data)
    assert data == copy


# --- where settings come from ---------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_no_config_files_gives_defaults(tmp_path: Path) -> None:
    assert read_config_file(None, tmp_path) == {}
    assert load_settings({}, tmp_path) == Settings()


def test_pyproject_tool_table_is_read(tmp_path: Path) -> None:
    _write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n\n[tool.profiler]\n'
           'device = "cpu"\nbatch-sizes = [4, 8]\n\n[tool.profiler.timing]\nmin_repeats = 2\n')
    settings = load_settings({}, tmp_path)
    assert settings.device == "cpu"
    assert settings.batch_sizes == (4, 8)
    assert settings.timing == Timing(min_repeats=2)


def test_pyproject_without_tool_table_gives_defaults(tmp_path: Path) -> None:
    _write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n\n[tool.ruff]\nline-length = 9\n')
    assert load_settings({}, tmp_path) == Settings()


def test_profiler_toml_wins_over_pyproject(tmp_path: Path) -> None:
    _write(tmp_path / "pyproject.toml", '[tool.profiler]\ndevice = "mps"\nbatch_sizes = [2]\n')
    _write(tmp_path / "profiler.toml", 'device = "cpu"\n')
    settings = load_settings({}, tmp_path)
    assert settings.device == "cpu"
    # profiler.toml replaces [tool.profiler]; the two are not merged.
    assert settings.batch_sizes == DEFAULT_BATCH_SIZES


def test_cli_wins_over_config_file_and_none_means_unset(tmp_path: Path) -> None:
    _write(tmp_path / "profiler.toml", 'device = "cpu"\nbatch_sizes = [4]\nmodel = "from/file"\n'
           'recommend_within = 0.2\n')
    settings = load_settings({"device": "mps", "batch_sizes": [16, 32], "model": None,
                              "corpus": None, "quick": None, "studies": None,
                              "scalene": None}, tmp_path)
    assert settings.device == "mps"
    assert settings.batch_sizes == (16, 32)
    assert settings.model == "from/file"
    assert settings.recommend_within == 0.2
    assert settings.scalene is True


def test_explicit_config_file_wins_over_discovered_ones(tmp_path: Path) -> None:
    _write(tmp_path / "profiler.toml", 'device = "mps"\n')
    other = _write(tmp_path / "other.toml", 'device = "cpu"\n')
    assert load_settings({}, tmp_path, other).device == "cpu"
    nested = tmp_path / "sub"
    nested.mkdir()
    pyproject = _write(nested / "pyproject.toml", '[tool.profiler]\ndevice = "cuda"\n')
    assert load_settings({}, tmp_path, pyproject).device == "cuda"


def test_missing_explicit_config_file(tmp_path: Path) -> None:
    with pytest.raises(ProfilerError, match="does not exist"):
        load_settings({}, tmp_path, tmp_path / "nope.toml")


def test_config_file_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ProfilerError):
        load_settings({}, tmp_path, tmp_path)


@pytest.mark.parametrize("name", ["profiler.toml", "pyproject.toml"])
def test_invalid_toml_is_a_profiler_error(tmp_path: Path, name: str) -> None:
    _write(tmp_path / name, "[tool.profiler\ndevice = = 'cpu'\n")
    with pytest.raises(ProfilerError, match="not valid TOML"):
        load_settings({}, tmp_path)


def test_non_utf8_toml_is_a_profiler_error(tmp_path: Path) -> None:
    (tmp_path / "profiler.toml").write_bytes(b'device = "\xff\xfe"\n')
    with pytest.raises(ProfilerError, match="not valid TOML"):
        load_settings({}, tmp_path)


def test_bad_values_in_config_file_are_rejected(tmp_path: Path) -> None:
    _write(tmp_path / "profiler.toml", "batch_sizes = [0]\n")
    with pytest.raises(ProfilerError, match="batch size"):
        load_settings({}, tmp_path)
    _write(tmp_path / "profiler.toml", "unknown_key = 1\n")
    with pytest.raises(ProfilerError, match="unknown_key"):
        load_settings({}, tmp_path)
    _write(tmp_path / "profiler.toml", "[timing]\nmin_repeats = 9\nmax_repeats = 3\n")
    with pytest.raises(ProfilerError, match="max_repeats"):
        load_settings({}, tmp_path)


# --- --quick --------------------------------------------------------------------------------


def test_quick_preset_is_shorter_than_full_timing() -> None:
    full = Timing()
    assert QUICK_TIMING.min_time_s < full.min_time_s
    assert QUICK_TIMING.max_repeats < full.max_repeats
    assert QUICK_TIMING.min_repeats <= QUICK_TIMING.max_repeats
    for name in ("workload_repeats", "query_texts", "search_texts"):
        assert getattr(QUICK_TIMING, name) < getattr(full, name), name


def test_workload_settings_come_from_the_file_and_the_command_line(tmp_path: Path) -> None:
    _write(tmp_path / "profiler.toml", 'workload = "stream"\nrequest-size = 64\n'
                                       "[timing]\nworkload-repeats = 4\n")
    settings = load_settings({}, tmp_path)
    assert (settings.workload, settings.request_size) == ("stream", 64)
    assert settings.timing.workload_repeats == 4
    cli = load_settings({"workload": "query", "request_size": None, "token_budget": 300},
                        tmp_path)
    assert (cli.workload, cli.request_size, cli.token_budget) == ("query", 64, 300)
    _write(tmp_path / "profiler.toml", 'workload = "nope"\n')
    with pytest.raises(ProfilerError, match="unknown workload 'nope'"):
        load_settings({}, tmp_path)


def test_quick_flag_uses_the_quick_preset_over_file_timing(tmp_path: Path) -> None:
    _write(tmp_path / "profiler.toml", "[timing]\nmin_repeats = 7\nmax_repeats = 9\n")
    assert load_settings({}, tmp_path).timing == Timing(min_repeats=7, max_repeats=9)
    quick = load_settings({"quick": True}, tmp_path)
    assert quick.quick is True
    assert quick.timing == QUICK_TIMING
    assert dataclasses.asdict(quick.timing) == quick.to_dict()["timing"]


def test_quick_in_config_file_uses_the_preset(tmp_path: Path) -> None:
    _write(tmp_path / "profiler.toml", "quick = true\n")
    assert load_settings({}, tmp_path).timing == QUICK_TIMING
