"""From an OpenAI request body to a generation plan: prompt, output pieces, limits.

Everything the answer will contain is decided here, before any waiting, so
the stream and non-stream paths (and a retried request) produce the same
content, and the usage numbers are known exactly up front.
"""

from __future__ import annotations

from typing import Any

import orjson

from lockgate.sim.config import SimConfig
from lockgate.sim.engine import PromptBlocks
from lockgate.sim.faults import RequestOptions
from lockgate.sim.prefix_cache import block_hashes
from lockgate.sim.responses import ApiError
from lockgate.sim.tokens import (
    REPLY_PRIMING_TOKENS,
    chat_prompt_tokens,
    content_digest,
    generate_pieces,
    text_tokens,
    token_ids,
    token_pieces,
)
from lockgate.sim.tools import chosen_tool, tool_arguments

_MAX_N = 128


class ChoicePlan:
    """One choice of the answer: its stream pieces (one token each) and how it ends."""

    __slots__ = ("finish_reason", "index", "pieces", "tool_call_id", "tool_name")

    def __init__(
        self,
        index: int,
        pieces: list[str],
        finish_reason: str,
        tool_name: str | None = None,
        tool_call_id: str = "",
    ) -> None:
        self.index = index
        self.pieces = pieces
        self.finish_reason = finish_reason
        self.tool_name = tool_name
        self.tool_call_id = tool_call_id


class Plan:
    """Immutable once built (``events`` is a lazily filled cache), so plans can be shared."""

    __slots__ = (
        "choices",
        "completion_tokens",
        "events",
        "include_usage",
        "is_chat",
        "model",
        "prompt_tokens",
        "prompts",
        "step_tokens",
        "steps",
        "stream",
        "usage_in_final_choice",
    )

    def __init__(
        self,
        *,
        is_chat: bool,
        model: str,
        stream: bool,
        include_usage: bool,
        usage_in_final_choice: bool,
        prompt_tokens: int,
        prompts: list[PromptBlocks],
        choices: list[ChoicePlan],
    ) -> None:
        self.is_chat = is_chat
        self.model = model
        self.stream = stream
        self.include_usage = include_usage
        self.usage_in_final_choice = usage_in_final_choice
        self.prompt_tokens = prompt_tokens
        self.prompts = prompts
        self.choices = choices
        self.completion_tokens = sum(len(c.pieces) for c in choices)
        self.steps = max(len(c.pieces) for c in choices)
        # Tokens produced at each step (choices may differ in length).
        self.step_tokens = [sum(1 for c in choices if s < len(c.pieces)) for s in range(self.steps)]
        # Per step, the encoded ``choices`` array of each stream event.
        self.events: list[list[bytes]] | None = None


def _bad(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param)


def _opt_int(body: dict[str, Any], name: str, minimum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _bad(f"'{name}' must be an integer >= {minimum}", name)
    return value


def resolve_model(body: dict[str, Any], config: SimConfig) -> str:
    """The name to echo; absent means the first served model (as vLLM allows)."""
    model = body.get("model")
    if model is None:
        return config.models[0]
    if not isinstance(model, str) or not model:
        raise _bad("'model' must be a non-empty string", "model")
    if config.restrict_models and model not in config.models:
        raise ApiError(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
            param="model",
            reason="model_not_found",
        )
    return model


def _stream_flags(
    body: dict[str, Any], config: SimConfig, options: RequestOptions
) -> tuple[bool, bool, bool]:
    stream = body.get("stream") is True
    stream_options = body.get("stream_options")
    include_usage = (
        stream and isinstance(stream_options, dict) and stream_options.get("include_usage") is True
    )
    final = options.usage_in_final_choice
    in_final = config.usage_in_final_choice if final is None else final
    return stream, include_usage, in_final


def _output_length(
    body: dict[str, Any], config: SimConfig, options: RequestOptions, prompt_tokens: int
) -> tuple[int, bool]:
    """Answer length and whether ``max_tokens`` was what stopped it (finish "length")."""
    limit = _opt_int(body, "max_completion_tokens", 1)
    if limit is None:
        limit = _opt_int(body, "max_tokens", 1)
    natural = options.output_tokens if options.output_tokens is not None else config.output_tokens
    max_len = config.max_model_len
    if max_len is not None:
        requested = prompt_tokens + (limit or 0)
        if prompt_tokens >= max_len or requested > max_len:
            raise ApiError(
                400,
                f"This model's maximum context length is {max_len} tokens. However, you "
                f"requested {requested} tokens ({prompt_tokens} in the messages, {limit or 0} "
                "in the completion). Please reduce the length of the messages or completion.",
                code="context_length_exceeded",
                param="messages",
            )
        if limit is None:
            limit = max_len - prompt_tokens
    # As in vLLM: reaching max_tokens before the natural end token is a "length" stop.
    if limit is not None and limit <= natural:
        return limit, True
    return natural, False


def _request_seed(body: dict[str, Any], config: SimConfig) -> int:
    seed = body.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        return (config.seed * 1_000_003 + seed) & 0x7FFF_FFFF_FFFF_FFFF
    return config.seed


def _choices(
    digest: bytes, first_index: int, n: int, length: int, capped: bool, tool: Any
) -> list[ChoicePlan]:
    choices = []
    for j in range(n):
        index = first_index + j
        if tool is None:
            pieces = generate_pieces(digest, index, length)
            choices.append(ChoicePlan(index, pieces, "length" if capped else "stop"))
            continue
        name, params = tool
        pieces = token_pieces(tool_arguments(params, digest, index))
        reason = "tool_calls"
        if capped and len(pieces) > length:
            pieces, reason = pieces[:length], "length"
        call_id = "call_" + content_digest(digest, index)[:12].hex()
        choices.append(ChoicePlan(index, pieces, reason, name, call_id))
    return choices


def plan_chat(body: dict[str, Any], config: SimConfig, options: RequestOptions) -> Plan:
    model = resolve_model(body, config)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty array", "messages")
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _bad("each message needs a string 'role'", "messages")
    n = _opt_int(body, "n", 1) or 1
    if n > _MAX_N:
        raise _bad(f"'n' must be at most {_MAX_N}", "n")
    stream, include_usage, in_final = _stream_flags(body, config, options)
    prefill = _continued_text(body, messages)
    tokens = chat_prompt_tokens(messages)
    if prefill is not None:
        # The partial answer stays open: no end-of-message, no new assistant turn.
        tokens = tokens[: -1 - REPLY_PRIMING_TOKENS]
        messages = messages[:-1]
    prompt_tokens = len(tokens)
    digest = content_digest(
        orjson.dumps(messages, option=orjson.OPT_SORT_KEYS), _request_seed(body, config)
    )
    if prefill is None:
        length, capped = _output_length(body, config, options, prompt_tokens)
        choices = _choices(digest, 0, n, length, capped, chosen_tool(body))
    else:
        choices = _continued_choices(body, config, options, prompt_tokens, digest, n, prefill)
    return Plan(
        is_chat=True,
        model=model,
        stream=stream,
        include_usage=include_usage,
        usage_in_final_choice=in_final,
        prompt_tokens=prompt_tokens,
        prompts=[(prompt_tokens, block_hashes(tokens, config.block_size))],
        choices=choices,
    )


def _continued_text(body: dict[str, Any], messages: list[Any]) -> str | None:
    """The partial assistant answer to continue (vLLM's ``continue_final_message``), or None.

    As vLLM: it needs ``add_generation_prompt: false`` and a final assistant message.
    """
    if body.get("continue_final_message") is not True:
        return None
    if body.get("add_generation_prompt", True) is not False:
        raise _bad("Cannot set both `continue_final_message` and `add_generation_prompt` to True.")
    last = messages[-1]
    if last.get("role") != "assistant":
        raise _bad("continue_final_message requires the final message to be from the assistant")
    content = last.get("content")
    return content if isinstance(content, str) else ""


def _continued_choices(
    body: dict[str, Any],
    config: SimConfig,
    options: RequestOptions,
    prompt_tokens: int,
    digest: bytes,
    n: int,
    prefill: str,
) -> list[ChoicePlan]:
    """The rest of the answer the conversation would have had: when ``prefill`` is the
    start of that answer (k pieces), generation resumes at piece k, so a stream broken
    and continued reads exactly like an unbroken one; otherwise a fresh answer."""
    natural = options.output_tokens if options.output_tokens is not None else config.output_tokens
    full = generate_pieces(digest, 0, natural)
    done = next(
        (k for k in range(len(full), 0, -1) if "".join(full[:k]) == prefill),
        0,
    )
    remaining = max(1, natural - done)
    limit = _opt_int(body, "max_completion_tokens", 1) or _opt_int(body, "max_tokens", 1)
    _output_length(body, config, options, prompt_tokens)  # the context-window check
    capped = limit is not None and limit <= remaining
    length = limit if capped and limit is not None else remaining
    choices = []
    for index in range(n):
        pieces = generate_pieces(digest, index, done + length)[done:]
        if not done and prefill:
            pieces[0] = " " + pieces[0].lstrip()
        choices.append(ChoicePlan(index, pieces, "length" if capped else "stop"))
    return choices


def _prompts(body: dict[str, Any]) -> list[tuple[list[str], bytes]]:
    """Normalise every accepted ``prompt`` form to (tokens, bytes to hash) per prompt."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [(text_tokens(prompt), prompt.encode())]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return [(text_tokens(p), p.encode()) for p in prompt]
        if all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
            return [(token_ids(prompt), orjson.dumps(prompt))]
        if all(isinstance(p, list) and p and all(isinstance(t, int) for t in p) for p in prompt):
            return [(token_ids(p), orjson.dumps(p)) for p in prompt]
    raise _bad("'prompt' must be a string, an array of strings or of token arrays", "prompt")


def plan_completion(body: dict[str, Any], config: SimConfig, options: RequestOptions) -> Plan:
    model = resolve_model(body, config)
    prompts = _prompts(body)
    n = _opt_int(body, "n", 1) or 1
    if n * len(prompts) > _MAX_N:
        raise _bad(f"'n' times the number of prompts must be at most {_MAX_N}", "n")
    stream, include_usage, in_final = _stream_flags(body, config, options)
    seed = _request_seed(body, config)
    choices: list[ChoicePlan] = []
    blocks: list[PromptBlocks] = []
    prompt_tokens = 0
    for p, (tokens, raw) in enumerate(prompts):
        length, capped = _output_length(body, config, options, len(tokens))
        choices += _choices(content_digest(raw, seed), p * n, n, length, capped, None)
        blocks.append((len(tokens), block_hashes(tokens, config.block_size)))
        prompt_tokens += len(tokens)
    return Plan(
        is_chat=False,
        model=model,
        stream=stream,
        include_usage=include_usage,
        usage_in_final_choice=in_final,
        prompt_tokens=prompt_tokens,
        prompts=blocks,
        choices=choices,
    )
