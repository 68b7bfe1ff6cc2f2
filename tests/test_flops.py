"""FLOPs per token from the config, checked by hand and against torch's FLOP counter."""

from __future__ import annotations

from pathlib import Path

import pytest

from profiler.measure.flops import batch_flops, flops_per_token, model_config

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "intermediate_size": 64,
        "num_attention_heads": 2}
MINILM = {"hidden_size": 384, "num_hidden_layers": 6, "intermediate_size": 1536,
          "num_attention_heads": 12}


def test_tiny_config_by_hand() -> None:
    # per layer: projections 4*2*32*32 = 8192, FFN 2*2*32*64 = 8192, attention 2*2*10*32 = 1280
    assert flops_per_token(TINY, seq_len=10) == 2 * (8192 + 8192 + 1280) == 35_328


def test_minilm_shaped_config_at_128_tokens() -> None:
    # per layer: 8*384^2 = 1,179,648 + 4*384*1536 = 2,359,296 + 4*128*384 = 196,608
    assert flops_per_token(MINILM, seq_len=128) == 6 * 3_735_552 == 22_413_312  # 22.4 MFLOP
    assert batch_flops(MINILM, batch_size=1, padded_len=128) == pytest.approx(2.869e9, rel=1e-3)


def test_config_object_and_mapping_agree() -> None:
    from transformers import BertConfig

    config = BertConfig(hidden_size=32, num_hidden_layers=2, intermediate_size=64,
                        num_attention_heads=2)
    assert flops_per_token(config, 10) == flops_per_token(TINY, 10)


def test_batch_counts_padding_tokens() -> None:
    assert batch_flops(TINY, batch_size=4, padded_len=10) == 4 * 10 * 35_328
    # longer padding costs more per token too: attention grows with the sequence
    assert batch_flops(TINY, 4, 20) > 2 * batch_flops(TINY, 4, 10)


def test_bad_configs_are_rejected() -> None:
    with pytest.raises(ValueError, match="intermediate_size"):
        flops_per_token({k: v for k, v in TINY.items() if k != "intermediate_size"}, 10)
    with pytest.raises(ValueError, match="divisible"):
        flops_per_token({**TINY, "num_attention_heads": 3}, 10)
    with pytest.raises(ValueError, match="seq_len"):
        flops_per_token(TINY, 0)


def test_model_config_from_a_loaded_model(tiny_model: Path) -> None:
    from sentence_transformers import SentenceTransformer

    assert model_config(SentenceTransformer(str(tiny_model), device="cpu")) == TINY


def test_agrees_with_torch_flop_counter(tiny_model: Path) -> None:
    import torch
    from sentence_transformers import SentenceTransformer
    from torch.utils.flop_counter import FlopCounterMode

    # Eager attention: CPU SDPA runs a fused kernel that FlopCounterMode does not count.
    model = SentenceTransformer(str(tiny_model), device="cpu",
                                model_kwargs={"attn_implementation": "eager"})
    texts = ["the river rose", "a new law was said by the minister of water", "rate", "old city"]
    features = getattr(model, "preprocess", model.tokenize)(texts)  # tokenize before ST 6
    batch_size, padded_len = features["input_ids"].shape
    assert (features["attention_mask"] == 0).any()  # padded
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(features)
    counted = counter.get_total_flops()
    expected = batch_flops(model_config(model), batch_size, padded_len)
    assert expected <= counted <= 1.03 * expected
    # The whole gap: BERT's pooler, one 32 x 32 dense on [CLS] per text that mean pooling ignores.
    assert counted == expected + batch_size * 2 * 32 * 32
