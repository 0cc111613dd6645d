"""Config: unknown keys are errors that name file, line and path; env overrides; secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockgate.config import ConfigError, load_config, parse_config, resolve

GOOD = """
server:
  port: 9999
models:
  - name: chat
    aliases: [chat-latest]
    timeouts: {first_byte_s: 30}
    deployments:
      - name: a
        base_url: http://127.0.0.1:9000/v1/
        upstream_model: engine-chat
        timeouts: {connect_s: 1}
        forward_headers: [X-Trace-Id, x-sim-*]
"""


def test_good_config_resolves_with_merged_timeouts() -> None:
    config = resolve(parse_config(GOOD))
    (model,) = config.models
    (dep,) = model.deployments
    assert config.model_index["chat-latest"] is model
    assert (dep.host, dep.port, dep.base_path) == ("127.0.0.1", 9000, "/v1")
    assert dep.upstream_model == "engine-chat"
    assert dep.timeouts.connect_s == 1
    assert dep.timeouts.first_byte_s == 30
    assert dep.timeouts.total_s == 900  # the global default
    assert dep.forward_headers == frozenset({b"x-trace-id"})
    assert dep.forward_header_prefixes == (b"x-sim-",)
    assert dep.upstream_path("/v1/chat/completions") == "/v1/chat/completions"


def test_unknown_key_names_file_line_and_path(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(GOOD.replace("upstream_model:", "upstream_modle:"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "line 11" in message
    assert "models[0].deployments[0].upstream_modle" in message
    assert "unknown key" in message


def test_every_problem_is_reported_at_once() -> None:
    text = GOOD.replace("port: 9999", "port: 70000").replace("http://127", "ftp://127")
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert len(info.value.problems) == 2
    assert any("server.port" in p for p in info.value.problems)
    assert any("base_url" in p for p in info.value.problems)


def test_yaml_syntax_error_has_a_line() -> None:
    with pytest.raises(ConfigError, match=r"line 3, column \d+: YAML syntax error"):
        parse_config("server:\n  port: 1\n  host: a: b\n")


def test_duplicate_model_names_across_aliases_are_refused() -> None:
    text = (
        GOOD
        + """  - name: other
    aliases: [chat-latest]
    deployments: [{name: b, base_url: "http://127.0.0.1:1"}]
"""
    )
    with pytest.raises(ConfigError, match="chat-latest"):
        parse_config(text)


def test_environment_overrides_and_bad_override_is_named() -> None:
    spec = parse_config(GOOD, env={"LOCKGATE_PORT": "7070", "LOCKGATE_LOG_LEVEL": "DEBUG"})
    assert spec.server.port == 7070
    assert spec.server.log_level == "debug"
    with pytest.raises(ConfigError, match="LOCKGATE_PORT"):
        parse_config(GOOD, env={"LOCKGATE_PORT": "eighty"})


def test_secret_by_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_file = tmp_path / "key"
    secret_file.write_text("file-secret\n")
    text = GOOD.replace("upstream_model: engine-chat", f"api_key: {{file: {secret_file}}}")
    (dep,) = resolve(parse_config(text)).models[0].deployments
    assert dep.authorization == b"Bearer file-secret"

    monkeypatch.setenv("UPSTREAM_KEY", "env-secret")
    text = GOOD.replace("upstream_model: engine-chat", "api_key: {env: UPSTREAM_KEY}")
    (dep,) = resolve(parse_config(text)).models[0].deployments
    assert dep.authorization == b"Bearer env-secret"


def test_missing_secret_is_an_error_that_does_not_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    text = GOOD.replace("upstream_model: engine-chat", "api_key: {env: NOT_SET_ANYWHERE}")
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE is not set"):
        resolve(parse_config(text))


def test_literal_secrets_and_dangerous_forwarded_headers_are_refused() -> None:
    with pytest.raises(ConfigError, match="api_key"):
        parse_config(GOOD.replace("upstream_model: engine-chat", "api_key: sk-literal"))
    with pytest.raises(ConfigError, match="may not be forwarded"):
        parse_config(GOOD.replace("X-Trace-Id", "Authorization"))


def test_empty_file_is_a_valid_gateway_without_models() -> None:
    assert parse_config("").models == []
