"""Stripe-style signatures: what a receiver accepts and what it refuses."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from lockgate.webhooks.signing import (
    SECRET_PREFIX,
    SignatureError,
    new_secret,
    signature_header,
    verify,
)

BODY = b'{"id":"evt_1","type":"budget.threshold_crossed","data":{"spent":"8.000000"}}'
NOW = 1_767_225_600


def test_the_header_is_t_and_a_hex_hmac_of_t_dot_body() -> None:
    secret = new_secret()
    header = signature_header([secret], NOW, BODY)
    expected = hmac.new(secret.encode(), b"%d." % NOW + BODY, hashlib.sha256).hexdigest()
    assert header == f"t={NOW},v1={expected}"
    assert verify(BODY, header, secret, now=NOW) == NOW


def test_secrets_are_fresh_prefixed_and_standard_base64() -> None:
    first, second = new_secret(), new_secret()
    assert first.startswith(SECRET_PREFIX)
    assert first != second
    key = base64.b64decode(first.removeprefix(SECRET_PREFIX), validate=True)
    assert len(key) == 24  # Standard Webhooks: 24 to 64 bytes


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "no Lockgate-Signature"),
        ("", "no Lockgate-Signature"),
        ("v1=abc", "needs t="),
        (f"t={NOW}", "needs t="),
        ("t=soon,v1=abc", "not an integer"),
        (f"t={NOW},v1=00", "no signature matches"),
    ],
)
def test_malformed_or_wrong_headers_are_refused(header: str | None, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        verify(BODY, header, new_secret(), now=NOW)


def test_an_altered_body_or_another_secret_does_not_verify() -> None:
    secret = new_secret()
    header = signature_header([secret], NOW, BODY)
    with pytest.raises(SignatureError, match="no signature matches"):
        verify(BODY.replace(b"8.0", b"0.8"), header, secret, now=NOW)
    with pytest.raises(SignatureError, match="no signature matches"):
        verify(BODY, header, new_secret(), now=NOW)


def test_an_old_signature_is_a_replay_outside_the_tolerance() -> None:
    secret = new_secret()
    header = signature_header([secret], NOW, BODY)
    assert verify(BODY, header, secret, now=NOW + 299) == NOW
    with pytest.raises(SignatureError, match="tolerance"):
        verify(BODY, header, secret, now=NOW + 301)
    with pytest.raises(SignatureError, match="tolerance"):
        verify(BODY, header, secret, now=NOW - 301)  # from the future: a clock off
    assert verify(BODY, header, secret, now=NOW + 3000, tolerance_s=3600) == NOW


def test_during_a_rotation_either_secret_verifies() -> None:
    old, new = new_secret(), new_secret()
    header = signature_header([new, old], NOW, BODY)
    assert header.count("v1=") == 2
    assert verify(BODY, header, new, now=NOW) == NOW
    assert verify(BODY, header, old, now=NOW) == NOW
    with pytest.raises(SignatureError):
        verify(BODY, header, new_secret(), now=NOW)
