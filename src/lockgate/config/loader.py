"""Read a YAML config file, apply environment overrides, validate once.

Errors name the file, the line, the path inside the document and what is
wrong, so an operator can fix a config without reading our source.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lockgate.config.spec import GatewaySpec

# The few settings operators change per environment; everything else is config as code.
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "LOCKGATE_HOST": ("server", "host"),
    "LOCKGATE_PORT": ("server", "port"),
    "LOCKGATE_ADMIN_PORT": ("server", "admin_port"),
    "LOCKGATE_WORKERS": ("server", "workers"),
    "LOCKGATE_DATA_DIR": ("server", "data_dir"),
    "LOCKGATE_LOG_LEVEL": ("server", "log_level"),
    "LOCKGATE_DATABASE_URL": ("database", "url"),
    "LOCKGATE_REDIS_URL": ("redis", "url"),
}


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists every finding, one per line."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"invalid configuration in {source}:\n" + "\n".join(problems))


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> GatewaySpec:
    """Load and validate ``path``; environment overrides from ``env`` (default: os.environ)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [f"cannot read file: {exc.strerror or exc}"]) from None
    return parse_config(text, source=source, env=os.environ if env is None else env)


def parse_config(
    text: str, *, source: str = "<config>", env: Mapping[str, str] | None = None
) -> GatewaySpec:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [f"{where}YAML syntax error: {problem}"]) from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(source, ["the top level must be a mapping (server:, models:, ...)"])
    overridden = _apply_env(document, env or {})
    try:
        return GatewaySpec.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(source, _describe(exc, node, overridden)) from None


def _apply_env(document: dict[str, Any], env: Mapping[str, str]) -> dict[tuple[str, ...], str]:
    overridden: dict[tuple[str, ...], str] = {}
    for var, (section, key) in ENV_OVERRIDES.items():
        value = env.get(var)
        if value is None or value == "":
            continue
        target = document.setdefault(section, {})
        if isinstance(target, dict):
            target[key] = value
            overridden[(section, key)] = var
    return overridden


def _describe(
    exc: ValidationError, root: yaml.Node | None, overridden: dict[tuple[str, ...], str]
) -> list[str]:
    problems = []
    for error in exc.errors():
        loc = tuple(str(p) for p in error["loc"])
        path = _dotted(error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see docs/configuration.md)"
        origin = overridden.get(loc[:2]) if len(loc) >= 2 else None
        if origin is not None:
            problems.append(f"{path} (from environment variable {origin}): {message}")
            continue
        line = _line_of(root, error["loc"])
        where = f"line {line}: " if line else ""
        problems.append(f"{where}{path or '(top level)'}: {message}")
    return problems


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """Walk the YAML node tree along a pydantic error location to find its line."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = None
            for key, value in node.value:
                if key.value == part:
                    found, line = value, key.start_mark.line + 1
                    break
            node = found
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
        if node is None:
            break
    return line
