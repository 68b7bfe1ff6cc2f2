"""Build the static site with mkdocs, and ship the chart JavaScript with it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from profiler.errors import ProfilerError
from profiler.rundir import SUMMARY, RunDir

SITE_NAME_VARIABLE = "PROFILER_SITE_NAME"  # mkdocs.yml reads the site's name from it
BUNDLE = Path("docs") / "assets" / "javascripts" / "vega-bundle.js"
MB = 1024 * 1024


def ensure_vega_bundle(root: Path) -> Path:
    """Write Vega, Vega-Lite and vega-embed as one local script, so charts work offline."""
    import altair as alt
    import vl_convert as vlc

    target = root / BUNDLE
    version = f"// vega-lite {alt.SCHEMA_VERSION}\n"
    if target.is_file() and target.read_text(encoding="utf-8")[:len(version)] == version:
        return target
    major_minor = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    target.parent.mkdir(parents=True, exist_ok=True)
    bundle = vlc.javascript_bundle(vl_version=major_minor)  # type: ignore[call-arg]
    target.write_text(version + bundle, encoding="utf-8")
    return target


def site_title(model: str | None) -> str:
    """The site's name: the model's own name, reduced to characters no page can misread."""
    name = re.sub(r"[^\w.+-]", "", Path(model or "").name)[:60]
    return f"Embedding profile: {name}" if name else "Embedding profile"


def build_site(root: Path, model: str | None = None) -> Path:
    """Run `mkdocs build --strict` into site/; raise ProfilerError with mkdocs' complaint."""
    ensure_vega_bundle(root)
    site = root / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(site)], cwd=root, capture_output=True, text=True,
                          env={**os.environ, SITE_NAME_VARIABLE: site_title(model)})
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if "WARNING" in ln or "Error" in ln]
        raise ProfilerError("mkdocs build failed: " + (lines[-1] if lines else
                                                        done.stderr.strip()[-200:]))
    return site


def site_size_mb(site: Path) -> float:
    """Return the total size of every file under `site`, in MB (what publishing uploads)."""
    return sum(path.stat().st_size for path in site.rglob("*") if path.is_file()) / MB


def deploy(root: Path) -> str:
    """Publish the built site/ to the gh-pages branch of origin with `mkdocs gh-deploy`."""
    if not (root / "site" / "index.html").is_file():
        raise ProfilerError(f"{root / 'site'} has no built site: run `profiler build` or "
                            "`profiler render` first")
    latest = RunDir(root / "data" / "latest")
    model = (latest.read(SUMMARY).get("model") or {}).get("name") if latest.has(SUMMARY) else None
    done = subprocess.run([sys.executable, "-m", "mkdocs", "gh-deploy", "--force",
                           "--no-history", "--message",
                           "Publish the embedding profile"],
                          cwd=root, capture_output=True, text=True, check=False,
                          env={**os.environ, SITE_NAME_VARIABLE: site_title(model)})
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        raise ProfilerError("mkdocs gh-deploy failed: " + (lines[-1] if lines else "no output"))
    return "published site/ to the gh-pages branch of origin"
