"""Prompts in the access log, for projects that opt in, redacted.

By default no prompt reaches any log. A project's administrator may turn on
``log_prompts`` (admin API, ``lockgate projects update --log-prompts on``); the
access log then carries a ``prompt`` field for that project's requests: the text
the client sent (chat messages as ``role: content`` lines, a completion's
prompt, an embedding's input), with every match of the configured rules
replaced, then cut to ``max_chars``.

Redaction runs before the cut, on at most twice ``max_chars`` of text, so a
secret that straddles the cut is either redacted whole or falls beyond it:
no partial secret survives. The cost (a few regular expressions over a few
kilobytes) is paid on the event loop, by opted-in projects' requests only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lockgate.config.observability_spec import PromptLoggingSpec
from lockgate.operations import Operation


@dataclass(frozen=True, slots=True)
class PromptRedactor:
    """The compiled rules of ``observability.prompt_logging``."""

    rules: tuple[tuple[re.Pattern[str], str], ...]
    max_chars: int

    @classmethod
    def from_spec(cls, spec: PromptLoggingSpec) -> PromptRedactor:
        return cls(
            tuple((re.compile(rule.pattern), rule.replacement) for rule in spec.redact),
            spec.max_chars,
        )

    def redact(self, text: str) -> str:
        text = text[: 2 * self.max_chars]
        for pattern, replacement in self.rules:
            text = pattern.sub(replacement, text)
        return text[: self.max_chars]

    def prompt_of(self, operation: Operation, body: dict[str, Any] | None) -> str | None:
        """The request's prompt text, redacted; None when the body has none."""
        if body is None:
            return None
        if operation is Operation.CHAT:
            text = _messages_text(body.get("messages"))
        elif operation is Operation.COMPLETIONS:
            text = _plain_text(body.get("prompt"))
        elif operation is Operation.EMBEDDINGS:
            text = _plain_text(body.get("input"))
        else:
            return None
        return None if text is None else self.redact(text)


def _messages_text(messages: Any) -> str | None:
    if not isinstance(messages, list):
        return None
    lines = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = _plain_text(message.get("content"))
        if content is not None:
            lines.append(f"{message.get('role', '?')}: {content}")
    return "\n".join(lines)


def _plain_text(value: Any) -> str | None:
    """A string, or the text parts of a list (content parts, a batch of inputs)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for part in value:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "\n".join(parts)
    return None
