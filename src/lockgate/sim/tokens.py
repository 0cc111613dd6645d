"""A toy tokenizer and a deterministic text generator.

Real tokenizers are big and model-specific; the gateway only needs token
counts that a test can recompute exactly, so a token here is a regex match
(``\\w+`` or one non-space symbol, Unicode aware). Generated text is one
vocabulary word per token, and every vocabulary word is exactly one token, so
``count_text_tokens(content) == completion_tokens`` holds for any answer.
About one word in eight is multi-byte UTF-8 so that stream parsers meet split
characters regularly.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")

# Three tokens of chat-template overhead per message (start, role, end) and three
# more priming the assistant's answer, as OpenAI's own accounting does.
MESSAGE_OVERHEAD_TOKENS = 3
REPLY_PRIMING_TOKENS = 3

_ASCII_TEXT = """
the of and to in is that for it as was with be by on not he this are or his from at which
but have an they you were her she there been one all we their has would when if so no what
can more out up about into them some could time these two may then do first any my now such
like other how its our over only new also after use most where through back much before well
good very make way even world just still between down life being same another year while know
last never day under might great old right part place small each state again take since own
high number long point without both home open system end large group work turn hand show give
model token stream gateway engine request answer batch cache prefix queue latency signal
river stone cloud light green quiet amber copper silver maple cedar harbor valley meadow north
south east west summer winter spring autumn morning evening bright gentle rapid steady clear
simple solid lucid vivid calm bold brave fair kind wise keen swift true ready random sample
value vector matrix kernel socket packet buffer thread method object record field
harvest lantern orbit pixel garden window
column table index falcon shard replica leader follower ledger tenant budget meter quota policy
"""
_ASCII_WORDS = tuple(_ASCII_TEXT.split())

_MULTIBYTE_WORDS = (
    "naïve",
    "日本語",
    "🚀",
    "Ωmega",
    "café",
    "über",
    "straße",
    "Привет",
    "Ελλάδα",
    "東京",
    "中文",
    "한국어",
    "ñandú",
    "✨",
    "→",
    "€",
    "😀",
    "αλφα",
    "βήτα",
    "λ",
    "façade",
    "crème",
    "smörgåsbord",
    "piñata",
    "jalapeño",
    "résumé",
    "Zürich",
    "København",
    "Łódź",
    "İstanbul",
    "δ",
    "🌍",
)

# Exactly 256 words, so one byte of hash output picks one word.
VOCABULARY: tuple[str, ...] = tuple(_ASCII_WORDS) + _MULTIBYTE_WORDS


def text_tokens(text: str) -> list[str]:
    return _TOKEN_RE.findall(text)


def count_text_tokens(text: str) -> int:
    """Token count of a piece of text under the simulator's tokenizer."""
    return len(_TOKEN_RE.findall(text))


def token_pieces(text: str) -> list[str]:
    """Split ``text`` into one piece per token, keeping the whitespace, so pieces join back."""
    starts = [m.start() for m in _TOKEN_RE.finditer(text)]
    if not starts:
        return [text] if text else []
    starts[0] = 0
    starts.append(len(text))
    return [text[starts[i] : starts[i + 1]] for i in range(len(starts) - 1)]


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        # Multi-part content: only text parts carry tokens in the simulator.
        parts = [
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        ]
        return "\n".join(parts)
    return ""


def chat_prompt_tokens(messages: Iterable[Mapping[str, Any]]) -> list[str]:
    """The token sequence a chat template would produce; its length is the prompt usage."""
    tokens: list[str] = []
    for message in messages:
        role = message.get("role")
        tokens.append("<|start|>")
        tokens.append(role if isinstance(role, str) else "user")
        tokens.extend(_TOKEN_RE.findall(_content_text(message.get("content"))))
        tokens.append("<|end|>")
    tokens += ("<|start|>", "assistant", "<|sep|>")
    return tokens


def count_chat_prompt_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """Prompt tokens of a chat request: sum of (content tokens + 3) over messages, plus 3."""
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        total += len(_TOKEN_RE.findall(_content_text(message.get("content"))))
        total += MESSAGE_OVERHEAD_TOKENS
    return total


def content_digest(data: bytes, seed: int) -> bytes:
    """A short fingerprint of a prompt; everything generated from a prompt derives from it."""
    return hashlib.blake2b(
        data, digest_size=16, key=seed.to_bytes(8, "little", signed=True)
    ).digest()


def generate_words(digest: bytes, choice: int, count: int) -> list[str]:
    """``count`` vocabulary words, a pure function of (digest, choice, count)."""
    stream = hashlib.shake_128(digest + choice.to_bytes(4, "little")).digest(count)
    vocab = VOCABULARY
    return [vocab[b] for b in stream]


def generate_pieces(digest: bytes, choice: int, count: int) -> list[str]:
    """Stream deltas of a generated answer: words, each after the first with a leading space."""
    words = generate_words(digest, choice, count)
    return [words[0], *(" " + w for w in words[1:])] if words else []


def token_ids(tokens: Sequence[int]) -> list[str]:
    """Token-id prompts become placeholder tokens so they hash like text tokens."""
    return [str(t) for t in tokens]
