"""Model FLOPs per token for BERT-like encoders, counted from the Hugging Face config.

A multiply-add counts as 2 FLOPs. With hidden size h, intermediate (FFN) size i, L layers and
a sequence of s tokens (padding included), each token costs per layer:

    Q, K, V and output projections   4 * 2 * h * h
    feed-forward, up and down        2 * 2 * h * i
    scores Q K^T and weights @ V     2 * 2 * s * h   (summed over heads: heads * head_dim = h)

    flops_per_token = L * (8 h^2 + 4 h i + 4 s h)

Ignored, because they are not matrix products or are small: biases, layer norms, softmax,
activations, pooling, and BERT's pooler (one h x h dense on the [CLS] token per text, which
mean pooling never reads). The embedding layer is a table lookup plus additions, not a matmul,
so it adds no FLOPs here even though it reads memory. The number of attention heads does not
change the count; it is only checked so that h splits evenly.

A batch is computed at its padded length, so padding tokens cost as much as real ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CONFIG_FIELDS = ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads")


def flops_per_token(config: Mapping[str, Any] | object, seq_len: int) -> float:
    """Return the forward FLOPs for one token in a sequence of `seq_len` tokens."""
    h, layers, inter, heads = (_field(config, name) for name in CONFIG_FIELDS)
    if seq_len < 1:
        raise ValueError(f"seq_len must be at least 1, got {seq_len}")
    if h % heads:
        raise ValueError(f"hidden_size {h} is not divisible by num_attention_heads {heads}")
    projections = 4 * 2 * h * h
    feed_forward = 2 * 2 * h * inter
    attention = 2 * 2 * seq_len * h
    return float(layers * (projections + feed_forward + attention))


def batch_flops(config: Mapping[str, Any] | object, batch_size: int, padded_len: int) -> float:
    """Return the forward FLOPs for a batch, padding tokens included (they are computed too)."""
    return batch_size * padded_len * flops_per_token(config, padded_len)


def model_config(model: Any) -> dict[str, int]:
    """Return the fields `flops_per_token` needs from a loaded SentenceTransformer."""
    config = _hf_config(model)
    return {name: _field(config, name) for name in CONFIG_FIELDS}


def _hf_config(model: Any) -> Any:
    # sentence-transformers 6 has `transformers_model`; older versions only `model[0].auto_model`.
    transformer = getattr(model, "transformers_model", None)
    if transformer is None:
        transformer = model[0].auto_model
    config = transformer.config
    # Multimodal configs keep the text encoder's sizes in a sub-config.
    text_config = getattr(config, "get_text_config", None)
    return text_config() if callable(text_config) else config


def _field(config: Mapping[str, Any] | object, name: str) -> int:
    value = config.get(name) if isinstance(config, Mapping) else getattr(config, name, None)
    if value is None:
        raise ValueError(f"model config has no {name}; FLOPs are counted for BERT-like encoders")
    return int(value)
