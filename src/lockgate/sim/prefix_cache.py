"""Automatic prefix caching in the manner of vLLM.

A prompt is cut into whole blocks of ``block_size`` tokens; each block's hash
covers the block and everything before it, so a hit on block *i* implies hits
on blocks 0..i-1 and a lookup can stop at the first miss. Blocks live in an LRU
bounded by the KV cache size. As in vLLM, the last prompt token is always
computed, so a prompt of exactly k whole blocks can hit at most k-1 of them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence


def block_hashes(tokens: Sequence[Hashable], block_size: int) -> list[int]:
    """Cumulative hashes of the whole blocks of ``tokens`` (a partial tail block has none)."""
    hashes: list[int] = []
    parent = 0
    for start in range(0, len(tokens) - block_size + 1, block_size):
        parent = hash((parent, *tokens[start : start + block_size]))
        hashes.append(parent)
    return hashes


class PrefixCache:
    """LRU of block hashes; values are unused, only presence and recency matter."""

    __slots__ = ("_blocks", "block_size", "capacity_blocks")

    def __init__(self, block_size: int, capacity_tokens: int) -> None:
        self.block_size = block_size
        self.capacity_blocks = max(1, capacity_tokens // block_size)
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._blocks)

    def match_and_store(self, hashes: Sequence[int], prompt_len: int) -> int:
        """Return the cached prefix length in tokens, then make all blocks most recent."""
        blocks = self._blocks
        limit = min(len(hashes), (prompt_len - 1) // self.block_size) if prompt_len > 0 else 0
        hit = 0
        while hit < limit and hashes[hit] in blocks:
            hit += 1
        # Newest-first for the prompt's head: eviction then takes tail blocks before
        # the prefix they extend, so a surviving block is always reachable (as vLLM).
        for h in reversed(hashes):
            if h in blocks:
                blocks.move_to_end(h)
            else:
                blocks[h] = None
        while len(blocks) > self.capacity_blocks:
            blocks.popitem(last=False)
        return hit * self.block_size

    def clear(self) -> None:
        self._blocks.clear()
