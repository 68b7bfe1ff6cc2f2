"""Shared fixtures: a tiny random sentence-transformers model and a throwaway project folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
WORDS = ("the", "a", "of", "in", "to", "and", "is", "was", "by", "for", "on", "river", "city",
         "law", "rate", "rose", "fell", "claim", "said", "percent", "year", "country",
         "minister", "price", "water", "report", "new", "old")
CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The suite runs two tests at a time (-n 2): each gets one core for torch and the builds it
# starts, instead of both spinning two threads on two cores (a third slower end to end).
os.environ.setdefault("OMP_NUM_THREADS", "1")

# The longest work first (pyproject: --no-loadscope-reorder keeps this order): a worker that
# takes the real model's minutes-long build at the start runs it beside everything else,
# instead of alone at the end. Files not named keep their place after these.
LONGEST_FIRST = ("test_real_model.py", "test_build.py", "test_faults.py", "test_browser.py",
                 "test_batch_workloads.py", "test_static_int8.py", "test_memory_leak.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the tests longest file first (a stable sort: within a file, as written)."""
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def build_tiny_model(target: Path) -> Path:
    """Save a random BERT (hidden 32, 2 layers, tiny vocabulary) as a sentence-transformers dir."""
    return build_random_model(target, hidden=32, layers=2, max_length=64)


def build_random_model(target: Path, hidden: int, layers: int, max_length: int) -> Path:
    """Save a random BERT over the tiny vocabulary as a sentence-transformers dir."""
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    hf_dir = target.parent / (target.name + "-hf")
    hf_dir.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS,
             *CHARS, ".", ",", *(f"##{c}" for c in CHARS)]
    (hf_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(hf_dir / "vocab.txt"),
                                  model_max_length=max_length)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2 if hidden < 64 else 4,
                        intermediate_size=2 * hidden if hidden < 64 else 4 * hidden,
                        max_position_embeddings=max_length)
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    transformer, pooling = _modules(hf_dir, hidden, max_length)
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(target))
    shutil.rmtree(hf_dir)
    return target


def _modules(hf_dir: Path, hidden: int, max_length: int) -> tuple[object, object]:
    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Pooling, Transformer
    transformer = Transformer(str(hf_dir), max_seq_length=max_length)
    return transformer, Pooling(hidden, "mean")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random model directory, built once per test session."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def copy_project(target: Path) -> Path:
    """Copy the project's site sources and default corpus into `target`."""
    for name in ("templates", "docs"):
        shutil.copytree(REPO / name, target / name,
                        ignore=shutil.ignore_patterns("report", "index.md", "vega-bundle.js"))
    shutil.copy2(REPO / "mkdocs.yml", target / "mkdocs.yml")
    (target / "data").mkdir()
    shutil.copy2(REPO / "data" / "corpus.txt", target / "data" / "corpus.txt")
    return target


def configure_tiny(project: Path, vega_bundle: Path) -> Path:
    """Settings for a seconds-long build on the tiny model, and the chart bundle."""
    (project / "profiler.toml").write_text(TINY_SETTINGS, encoding="utf-8")
    shutil.copy2(vega_bundle, project / "docs" / "assets" / "javascripts" / "vega-bundle.js")
    return project


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the project's site sources and default corpus; the current folder for the test."""
    copy_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def vega_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The vega-embed bundle, generated once and copied into each project that builds a site."""
    from profiler.report.site import ensure_vega_bundle

    return ensure_vega_bundle(tmp_path_factory.mktemp("bundle"))


TINY_SETTINGS = """
cold_start = false
batch_sizes = [2, 4, 8]
text_lengths = [10, 100, 400]
length_batch_size = 4
request_size = 48
[serving]
min_run_s = 0.2
max_run_s = 0.5
batchers = ["dynamic", "sort_window"]
max_batch = [4]
resolution = 0.3
target_rps = 300
[timing]
warmup_repeats = 1
min_time_s = 0.0
min_repeats = 3
max_repeats = 3
texts_per_repeat = 16
overhead_rounds = 2
leak_iterations = 6
leak_warmup = 1
leak_texts = 8
workload_repeats = 3
query_texts = 10
search_texts = 16
round_texts = 16
max_rounds = 3
"""


@pytest.fixture
def tiny_project(project: Path, vega_bundle: Path) -> Path:
    """A project configured for a seconds-long build on the tiny model."""
    return configure_tiny(project, vega_bundle)


SHARED = pytest.mark.xdist_group("bulk_build")  # tests reading one shared build run on one worker


@pytest.fixture(scope="session")
def bulk_build(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path,
               vega_bundle: Path) -> Path:
    """One real build of every study on the tiny model (bulk, unprofiled, bf16 and onnx).

    Tests read its results and site and must not change them; a test that builds on top of it
    works on a copy (`copy_build`).
    """
    from helpers import run_profiler

    project = configure_tiny(copy_project(tmp_path_factory.mktemp("bulk-build")), vega_bundle)
    done = run_profiler("build", "--model", str(tiny_model), "--no-scalene", "--experiment",
                        "bf16", "--experiment", "onnx", cwd=project)
    assert done.returncode == 0, done.stderr
    return project


def copy_build(built: Path, target: Path) -> Path:
    """A copy of a built project (data/latest stays a link into its own runs) to change."""
    shutil.copytree(built, target, symlinks=True, dirs_exist_ok=True)
    return target
