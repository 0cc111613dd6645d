"""Tool calls: which function the simulated model calls, with what arguments.

Arguments are generated from the function's JSON schema (types, enums,
nesting) so a client that validates them against the schema is satisfied,
and drawn from the prompt's digest so the same request gets the same call.
"""

from __future__ import annotations

from typing import Any

import orjson

from lockgate.sim.responses import ApiError
from lockgate.sim.tokens import generate_words


def chosen_tool(body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    tools = body.get("tools")
    if not tools:
        return None
    if not isinstance(tools, list):
        raise ApiError(400, "'tools' must be an array", param="tools")
    choice = body.get("tool_choice")
    if choice == "none":
        return None
    wanted: str | None = None
    if isinstance(choice, dict):
        fn = choice.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            wanted = fn["name"]
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise ApiError(400, "each tool needs function.name", param="tools")
        if wanted is None or fn["name"] == wanted:
            params = fn.get("parameters")
            return fn["name"], params if isinstance(params, dict) else {}
    raise ApiError(400, f"tool_choice names an unknown function {wanted!r}", param="tool_choice")


def _schema_value(schema: Any, words: list[str], depth: int) -> Any:
    """A plausible value for a JSON-schema node, drawn from ``words`` (deterministic)."""
    if not isinstance(schema, dict):
        return words[0]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[len(words[0]) % len(enum)]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "integer":
        return len(words[0]) * 7 + len(words[1])
    if kind == "number":
        return (len(words[0]) * 7 + len(words[1])) / 4
    if kind == "boolean":
        return len(words[0]) % 2 == 0
    if kind == "null":
        return None
    if kind == "array":
        return [_schema_value(schema.get("items"), words[1:] + words[:1], depth + 1)]
    if kind == "object" or "properties" in schema:
        return _object_value(schema, words, depth + 1) if depth < 3 else {}
    return f"{words[0]} {words[1]}"


def _object_value(schema: dict[str, Any], words: list[str], depth: int) -> dict[str, Any]:
    props = schema.get("properties")
    if not isinstance(props, dict):
        return {}
    out: dict[str, Any] = {}
    for i, (name, sub) in enumerate(props.items()):
        start = (2 * i) % (len(words) - 1)
        out[str(name)] = _schema_value(sub, words[start : start + 2], depth)
    return out


def tool_arguments(parameters: dict[str, Any], digest: bytes, choice: int) -> str:
    words = generate_words(digest, 10_000 + choice, 64)
    return orjson.dumps(_object_value(parameters, words, 0)).decode()
