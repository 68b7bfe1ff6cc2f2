"""The site's theme in mkdocs.yml, its size, and the summary line that reports it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from conftest import REPO
from rich.console import Console

from profiler.display import print_summary
from profiler.report.site import MB, site_size_mb


class _AnyTagLoader(yaml.SafeLoader):
    """A safe loader that reads tags it does not know (`!!python/name:...`) as plain values."""


def _untagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):  # `!!python/name:x` has an empty value: keep the tag
        return loader.construct_scalar(node) or suffix
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_mapping(node)  # type: ignore[arg-type]


_AnyTagLoader.add_multi_constructor("", _untagged)


def mkdocs_config() -> dict[str, Any]:
    """The project's mkdocs.yml, as plain data."""
    text = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    return yaml.load(text, Loader=_AnyTagLoader)  # a SafeLoader underneath


def test_theme_follows_the_system_preference_with_a_light_dark_toggle() -> None:
    palette = mkdocs_config()["theme"]["palette"]
    # the first palette is the default: automatic, resolved from the reader's system preference
    assert [p["media"] for p in palette] == ["(prefers-color-scheme)",
                                             "(prefers-color-scheme: light)",
                                             "(prefers-color-scheme: dark)"]
    assert "scheme" not in palette[0]
    assert [p.get("scheme") for p in palette[1:]] == ["default", "slate"]
    for option in palette:  # every palette has a toggle to the next one, with an icon and a name
        assert option["toggle"]["icon"].startswith("material/")
        assert option["toggle"]["name"]
    icons = [p["toggle"]["icon"] for p in palette]
    assert len(set(icons)) == 3


def test_theme_has_tabs_search_copy_buttons_and_a_local_favicon() -> None:
    config = mkdocs_config()
    theme = config["theme"]
    assert {"navigation.tabs", "navigation.sections", "content.code.copy"} <= set(
        theme["features"])
    assert "search" in [p if isinstance(p, str) else next(iter(p)) for p in config["plugins"]]
    favicon = REPO / "docs" / theme["favicon"]
    assert favicon.suffix == ".svg"
    assert favicon.read_text(encoding="utf-8").lstrip().startswith("<svg")
    assert theme["font"] is False  # no web fonts: the site works offline


def test_site_loads_its_scripts_and_styles_from_itself() -> None:
    config = mkdocs_config()
    for asset in config["extra_javascript"] + config["extra_css"]:
        assert "://" not in asset and not asset.startswith("//")
        if not asset.endswith("vega-bundle.js"):  # written by `profiler build`
            assert (REPO / "docs" / asset).is_file(), asset


def test_site_size_counts_every_file_in_every_folder(tmp_path: Path) -> None:
    (tmp_path / "report" / "files").mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    (tmp_path / "index.html").write_bytes(b"x" * 1000)
    (tmp_path / "report" / "files" / "batch_size-scalene.json.gz").write_bytes(b"y" * MB)
    (tmp_path / "report" / "files" / "empty.json").write_bytes(b"")
    assert site_size_mb(tmp_path) == (MB + 1000) / MB
    assert site_size_mb(tmp_path / "empty") == 0.0


def test_summary_shows_where_the_site_is_and_its_size(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_bytes(b"z" * (3 * MB + MB // 5))
    console = Console(record=True, width=200)
    summary = {"run_id": "20240101T000000Z", "device": "cpu", "studies": {}, "bottlenecks": [],
               "scalene": {}}
    print_summary(console, summary, site)
    assert f"{site}/index.html (3.2 MB;" in console.export_text()
    console = Console(record=True, width=200)
    print_summary(console, summary, None)  # --no-site: no site line
    assert "index.html" not in console.export_text()
