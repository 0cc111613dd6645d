"""Unit tests of the pieces without HTTP: tokenizer, generator, prefix cache, config."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lockgate.sim import VOCABULARY, SimConfig, count_chat_prompt_tokens, count_text_tokens
from lockgate.sim.prefix_cache import PrefixCache, block_hashes
from lockgate.sim.tokens import (
    chat_prompt_tokens,
    content_digest,
    generate_pieces,
    token_pieces,
)


def test_text_tokens_are_words_and_single_symbols_unicode_aware() -> None:
    assert count_text_tokens("") == 0
    assert count_text_tokens("Hello, world!") == 4
    assert count_text_tokens("naïve 日本語 🚀🚀") == 4
    assert count_text_tokens("  a\tb\n") == 2


def test_chat_prompt_tokens_formula() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": None},
        {"role": "user", "content": [{"type": "text", "text": "hi there"}]},
    ]
    # (3+3) + (6+3) + (0+3) + (2+3) + 3
    assert count_chat_prompt_tokens(messages) == 26
    assert len(chat_prompt_tokens(messages)) == 26


def test_vocabulary_is_256_single_tokens_with_multibyte_words() -> None:
    assert len(VOCABULARY) == 256
    assert len(set(VOCABULARY)) == 256
    assert all(count_text_tokens(word) == 1 for word in VOCABULARY)
    multibyte = [w for w in VOCABULARY if len(w.encode()) != len(w)]
    assert len(multibyte) >= 24
    assert {"naïve", "日本語", "🚀", "Ωmega"} <= set(multibyte)


def test_generated_text_is_deterministic_and_counts_exactly() -> None:
    digest = content_digest(b"prompt", 0)
    pieces = generate_pieces(digest, 0, 200)
    assert pieces == generate_pieces(digest, 0, 200)
    assert pieces != generate_pieces(digest, 1, 200)
    assert pieces != generate_pieces(content_digest(b"prompt", 1), 0, 200)
    assert not pieces[0].startswith(" ")
    assert all(p.startswith(" ") for p in pieces[1:])
    assert count_text_tokens("".join(pieces)) == 200
    assert any(len(p.encode()) != len(p) for p in pieces)  # multi-byte shows up


def test_token_pieces_join_back() -> None:
    text = '{"city": "naïve Zürich", "n": 3}'
    pieces = token_pieces(text)
    assert "".join(pieces) == text
    assert len(pieces) == count_text_tokens(text)


def test_prefix_cache_matches_whole_blocks_and_keeps_last_token_uncached() -> None:
    cache = PrefixCache(block_size=4, capacity_tokens=64)
    tokens = [str(i) for i in range(10)]  # 2 whole blocks + 2 tokens
    hashes = block_hashes(tokens, 4)
    assert len(hashes) == 2
    assert cache.match_and_store(hashes, len(tokens)) == 0
    assert cache.match_and_store(hashes, len(tokens)) == 8
    # Same first block, different second block: only the first matches.
    other = tokens[:4] + ["x"] * 6
    assert cache.match_and_store(block_hashes(other, 4), 10) == 4
    # Exactly two blocks long: the last token is always computed, so one block hits.
    exact = tokens[:8]
    assert cache.match_and_store(block_hashes(exact, 4), 8) == 4


def test_prefix_cache_evicts_least_recently_used() -> None:
    cache = PrefixCache(block_size=2, capacity_tokens=8)  # 4 blocks
    a = block_hashes(["a"] * 5, 2)  # 2 blocks
    b = block_hashes(["b"] * 5, 2)
    c = block_hashes(["c"] * 5, 2)
    cache.match_and_store(a, 5)
    cache.match_and_store(b, 5)
    cache.match_and_store(a, 5)  # a is now the most recent
    cache.match_and_store(c, 5)  # evicts b
    assert len(cache) == 4
    assert cache.match_and_store(a, 5) == 4
    assert cache.match_and_store(b, 5) == 0


def test_config_rejects_unknown_keys_and_bad_rates() -> None:
    with pytest.raises(ValidationError):
        SimConfig(tokens_per_sec=5)
    with pytest.raises(ValidationError):
        SimConfig(fault_rates={"cut": 0.7, "stall": 0.5})
    with pytest.raises(ValidationError):
        SimConfig(fault_rates={"explode": 0.1})
    assert SimConfig(ttft_ms=0, tokens_per_s=0).is_instant
    assert not SimConfig().is_instant
