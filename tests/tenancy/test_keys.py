"""API key format, parsing and hashing."""

from __future__ import annotations

import base64
import hmac
import re
from pathlib import Path

import pytest

from lockgate.config.spec import SecretRef
from lockgate.tenancy.keys import (
    KEY_CHARS,
    decode_pepper,
    display_prefix,
    generate_key,
    hash_secret,
    is_key_id,
    load_pepper,
    parse_key,
    verify_secret,
)

PEPPER = bytes(range(32))
_BASE32 = re.compile(r"[a-z2-7]+")


def test_generated_keys_round_trip() -> None:
    seen: set[str] = set()
    for _ in range(500):  # covers both values of the secret's last character
        key_id, full, secret = generate_key()
        assert len(key_id) == 16
        assert _BASE32.fullmatch(key_id)
        assert len(secret) == 52
        assert _BASE32.fullmatch(secret)
        assert full == f"lg_{key_id}_{secret}"
        assert len(full) == KEY_CHARS == 72
        assert parse_key(full) == (key_id, secret)
        assert is_key_id(key_id)
        seen.add(full)
    assert len(seen) == 500


def test_secret_carries_256_bits() -> None:
    _, _, secret = generate_key()
    raw = base64.b32decode(secret.upper() + "====")
    assert len(raw) == 32


SQL_OR = "lg_aaaaaaaaaaaaaaaa_' OR '1'='1' --" + "a" * 37
SQL_DROP = "lg_aaaaaaaaaaaaaaaa_'; DROP TABLE api_keys; --" + "a" * 26


def valid_key() -> str:
    return generate_key()[1]


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "lg_",
        "sk_" + valid_key()[3:],
        "LG_" + valid_key()[3:],
        valid_key().upper(),
        valid_key()[:-1],
        valid_key() + "a",
        valid_key() + "\n",
        " " + valid_key()[1:],
        valid_key()[:-1] + "b",  # non-canonical last character (only 'a' or 'q' are possible)
        "lg_" + "a" * 16 + "-" + "a" * 52,
        "lg_" + "a" * 15 + "_" + "a" * 53,
        "lg_" + "a" * 17 + "_" + "a" * 51,
        "lg_" + "0189" * 4 + "_" + "a" * 52,  # not in the base32 alphabet
        "lg_" + "\u0430" * 16 + "_" + "a" * 52,  # Cyrillic a, looks the same
        SQL_OR,
        SQL_DROP,
        "lg_" + "a" * 16 + "_" + "a" * 51 + "\x00",
        "x" * 100_000,
    ],
)
def test_parse_rejects(presented: str) -> None:
    assert parse_key(presented) is None


def test_sql_ish_examples_have_the_right_length() -> None:
    """So the SQL-ish cases above are refused by the pattern, not merely the length check."""
    assert len(SQL_OR) == len(SQL_DROP) == KEY_CHARS


def test_is_key_id() -> None:
    assert is_key_id("abcdefghijklmn23")
    for bad in ("", "abcdefghijklmn2", "abcdefghijklmn231", "ABCDEFGHIJKLMN23", "abcdefghijklmn01"):
        assert not is_key_id(bad)


def test_display_prefix_shows_no_secret() -> None:
    key_id, full, secret = generate_key()
    shown = display_prefix(key_id)
    assert shown == f"lg_{key_id}_…"
    assert secret[:4] not in shown
    assert full.startswith(shown[:-1])


def test_hash_is_keyed_and_binds_the_key_id() -> None:
    key_id, _, secret = generate_key()
    other_id, _, _ = generate_key()
    stored = hash_secret(PEPPER, key_id, secret)
    assert len(stored) == 32
    assert stored == hash_secret(PEPPER, key_id, secret)
    assert verify_secret(PEPPER, key_id, secret, stored)
    assert not verify_secret(PEPPER, other_id, secret, stored)  # same secret, another id
    flipped = secret[:-1] + ("q" if secret[-1] == "a" else "a")
    assert not verify_secret(PEPPER, key_id, flipped, stored)
    assert not verify_secret(bytes(32), key_id, secret, stored)  # another pepper
    assert not verify_secret(PEPPER, key_id, secret, stored[:16])


def test_hash_refuses_a_short_pepper() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        hash_secret(b"short", "a" * 16, "b" * 52)


def test_verify_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # keys.py calls hmac.compare_digest
    key_id, _, secret = generate_key()
    stored = hash_secret(PEPPER, key_id, secret)
    assert verify_secret(PEPPER, key_id, secret, stored)
    assert calls == [(stored, stored)]


# -- pepper ----------------------------------------------------------------------
PEPPER_B64 = base64.b64encode(PEPPER).decode()


@pytest.mark.parametrize(
    "text",
    [
        PEPPER_B64,
        PEPPER_B64.rstrip("="),
        base64.urlsafe_b64encode(PEPPER).decode(),
        "base64:" + PEPPER_B64,
        PEPPER.hex(),
        "hex:" + PEPPER.hex().upper(),
        f"  {PEPPER.hex()}\n",
    ],
)
def test_decode_pepper(text: str) -> None:
    assert decode_pepper(text) == PEPPER


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (base64.b64encode(bytes(16)).decode(), "16 bytes; at least 32"),
        ("not base64 at all!", "not valid base64"),
        ("hex:zz", "not valid hex"),
        ("rot13:" + PEPPER_B64, "unknown pepper encoding prefix"),
    ],
)
def test_decode_pepper_errors(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as caught:
        decode_pepper(text)
    assert PEPPER_B64 not in str(caught.value)


def test_load_pepper_from_env_and_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LOCKGATE_API_KEY_PEPPER", PEPPER_B64)
    assert load_pepper() == PEPPER
    monkeypatch.setenv("MY_PEPPER", PEPPER.hex())
    assert load_pepper(SecretRef(env="MY_PEPPER")) == PEPPER
    path = tmp_path / "pepper"
    path.write_text(PEPPER_B64 + "\n")
    assert load_pepper(SecretRef(file=str(path))) == PEPPER


def test_load_pepper_errors_name_the_source_not_the_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("LOCKGATE_API_KEY_PEPPER", raising=False)
    with pytest.raises(ValueError, match=r"LOCKGATE_API_KEY_PEPPER.*not set"):
        load_pepper()
    monkeypatch.setenv("SHORT_PEPPER", "c2hvcnQtcGVwcGVy")
    with pytest.raises(ValueError, match="SHORT_PEPPER") as caught:
        load_pepper(SecretRef(env="SHORT_PEPPER"))
    assert "c2hvcnQtcGVwcGVy" not in str(caught.value)
    with pytest.raises(ValueError, match="cannot read secret file"):
        load_pepper(SecretRef(file=str(tmp_path / "absent")))
