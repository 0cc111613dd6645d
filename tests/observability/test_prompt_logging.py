"""Prompts reach the access log only for projects that opted in, and then redacted."""

from __future__ import annotations

import secrets
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from lockgate.config import GatewaySpec, resolve
from lockgate.config.observability_spec import PromptLoggingSpec
from lockgate.dataplane.context import Principal
from lockgate.dataplane.pipeline.authenticate import CredentialAuthenticator
from lockgate.dataplane.pipeline.authorize import PolicyAuthorizer
from lockgate.observability.access_log import AccessLog
from lockgate.observability.prompt_log import PromptRedactor
from lockgate.operations import Operation
from lockgate.sim import SimServer
from lockgate.tenancy.key_cache import KeyCache
from lockgate.tenancy.keys import generate_key
from tests.observability.support import context, observed_gateway, settled
from tests.observability.test_access_log import PEPPER, MemoryKeys, chat, lines, post
from tests.support import gateway_spec, sim_model

DEFAULT = PromptRedactor.from_spec(PromptLoggingSpec())


def test_the_default_rules_take_out_credentials_and_personal_data() -> None:
    _, lockgate_key, _ = generate_key()
    secrets_in_text = {
        lockgate_key: "[API_KEY]",
        "sk-proj-" + secrets.token_urlsafe(24): "[API_KEY]",
        "AKIAIOSFODNN7EXAMPLE": "[API_KEY]",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N": "[JWT]",
        "Bearer " + secrets.token_hex(16): "[TOKEN]",
        "jane.doe+billing@example.co.uk": "[EMAIL]",
        "4111 1111 1111 1111": "[NUMBER]",
    }
    for secret, placeholder in secrets_in_text.items():
        text = f"please use {secret} for this."
        assert DEFAULT.redact(text) == f"please use {placeholder} for this.", secret
    assert DEFAULT.redact("Call me at 10:30 about order 1234.") == (
        "Call me at 10:30 about order 1234."
    )


def test_redaction_comes_before_the_cut_so_no_partial_secret_survives() -> None:
    redactor = PromptRedactor.from_spec(PromptLoggingSpec(max_chars=64))
    key = "sk-" + "A" * 40
    text = "x" * 49 + " " + key  # the key straddles the 64th character
    logged = redactor.redact(text)
    assert len(logged) == 59
    assert "AAAA" not in logged
    assert logged == "x" * 49 + " [API_KEY]"


def test_rules_are_the_operators_and_a_bad_pattern_is_a_config_error() -> None:
    spec = GatewaySpec.model_validate(
        {"observability": {"prompt_logging": {"redact": [{"pattern": r"ticket-\d+"}]}}}
    )
    rules = PromptRedactor.from_spec(resolve(spec).observability.prompt_logging)
    assert rules.redact("see ticket-42, jane@example.com") == "see [REDACTED], jane@example.com"
    with pytest.raises(ValidationError, match="not a regular expression"):
        GatewaySpec.model_validate(
            {"observability": {"prompt_logging": {"redact": [{"pattern": "(unclosed"}]}}}
        )


def test_the_prompt_of_each_operation() -> None:
    opted_in = Principal(id="api_key:k", is_anonymous=False, log_prompts=True)
    log = AccessLog(prompts=PromptRedactor.from_spec(PromptLoggingSpec()))
    chat_body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "mail a@b.io"}]},
        ]
    }
    line = log.fields(context(principal=opted_in, body=chat_body))
    assert line["prompt"] == "system: Be brief.\nuser: mail a@b.io".replace("a@b.io", "[EMAIL]")
    completion = context(principal=opted_in, body={"prompt": "Once upon"})
    completion.operation = Operation.COMPLETIONS
    assert log.fields(completion)["prompt"] == "Once upon"
    embedding = context(principal=opted_in, body={"input": ["one", "two"]})
    embedding.operation = Operation.EMBEDDINGS
    assert log.fields(embedding)["prompt"] == "one\ntwo"
    # Not opted in, or prompt logging off in config: no field at all.
    assert "prompt" not in log.fields(context(principal=replace(opted_in, log_prompts=False)))
    assert "prompt" not in AccessLog().fields(context(principal=opted_in, body=chat_body))


async def test_only_the_opted_in_project_has_its_prompts_logged_and_redacted(
    sim: SimServer, tmp_path: Path
) -> None:
    keys = MemoryKeys()
    _, quiet_key = keys.add()
    loud_id, loud_key = keys.add()
    grant = keys.grants[loud_id]
    keys.grants[loud_id] = replace(grant, project=replace(grant.project, log_prompts=True))
    email = f"user{secrets.token_hex(4)}@example.com"
    prompt = f"My address is {email}; summarise my invoices"
    log = AccessLog(
        tmp_path / "access.log",
        flush_interval_s=0.01,
        prompts=PromptRedactor.from_spec(PromptLoggingSpec()),
    )
    log.start()
    try:
        async with observed_gateway(
            gateway_spec([sim_model("sim-chat", sim.base_url)]),
            log,
            authenticator=CredentialAuthenticator(KeyCache(keys), PEPPER),
            authorizer=PolicyAuthorizer(),
        ) as (gw, totals):
            assert await post(gw.port, chat(prompt), authorization=f"Bearer {quiet_key}") == 200
            assert await post(gw.port, chat(prompt), authorization=f"Bearer {loud_key}") == 200
            await settled(totals, 2)
    finally:
        log.close()
    quiet, loud = lines(tmp_path / "access.log")
    assert "prompt" not in quiet
    assert loud["prompt"] == "user: My address is [EMAIL]; summarise my invoices"
    written = (tmp_path / "access.log").read_bytes()
    assert email.encode() not in written
    assert quiet_key.encode() not in written
    assert loud_key.encode() not in written
    assert orjson.loads(written.splitlines()[1])["principal"] == f"api_key:{loud_id}"
