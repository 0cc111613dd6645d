"""Upstream credentials at rest: AES-256-GCM tokens under a versioned keyring."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from lockgate.tenancy.secretbox import (
    DecryptionFailed,
    Keyring,
    KeyringError,
    UnknownKeyVersion,
    associated_data,
)

KEY_1 = bytes(range(32))
KEY_2 = bytes(range(100, 132))
AAD = associated_data("deployment", "org-1", "openai-main")
SECRET = b"sk-upstream-credential"


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def test_round_trip_and_layout() -> None:
    ring = Keyring({1: KEY_1}, current=1)
    token = ring.encrypt(SECRET, AAD)
    assert ring.decrypt(token, AAD) == SECRET
    assert token[0] == 0x01
    assert token[1:5] == (1).to_bytes(4, "big")
    assert len(token) == 1 + 4 + 12 + len(SECRET) + 16
    assert SECRET not in token
    assert ring.encrypt(SECRET, AAD) != token  # fresh nonce each time
    assert ring.decrypt(ring.encrypt(b"", AAD), AAD) == b""


def test_wrong_aad_fails() -> None:
    ring = Keyring({1: KEY_1}, current=1)
    token = ring.encrypt(SECRET, AAD)
    for other in (
        associated_data("deployment", "org-2", "openai-main"),  # another tenant's row
        associated_data("deployment", "org-1", "openai-backup"),
        associated_data("deployment", "org-1/openai", "main"),
        b"",
    ):
        with pytest.raises(DecryptionFailed):
            ring.decrypt(token, other)


def test_associated_data_is_unambiguous() -> None:
    assert associated_data("a/b", "c") != associated_data("a", "b/c")
    assert associated_data("ab", "") != associated_data("a", "b")


def test_any_tampered_byte_fails() -> None:
    ring = Keyring({1: KEY_1, 7: KEY_2}, current=1)
    token = ring.encrypt(SECRET, AAD)
    for i in range(len(token)):
        tampered = bytearray(token)
        tampered[i] ^= 0x01
        with pytest.raises((DecryptionFailed, UnknownKeyVersion)):
            ring.decrypt(bytes(tampered), AAD)
    with pytest.raises(DecryptionFailed):
        ring.decrypt(token[:-1], AAD)
    with pytest.raises(DecryptionFailed, match="too short"):
        ring.decrypt(token[:20], AAD)


def test_version_swap_in_header_fails() -> None:
    """Both keys held: relabelling a version-1 token as version 7 must not decrypt."""
    ring = Keyring({1: KEY_1, 7: KEY_2}, current=1)
    token = bytearray(ring.encrypt(SECRET, AAD))
    token[1:5] = (7).to_bytes(4, "big")
    with pytest.raises(DecryptionFailed):
        ring.decrypt(bytes(token), AAD)


def test_unknown_version_fails() -> None:
    token = Keyring({3: KEY_1}, current=3).encrypt(SECRET, AAD)
    with pytest.raises(UnknownKeyVersion) as caught:
        Keyring({1: KEY_1}, current=1).decrypt(token, AAD)
    assert caught.value.version == 3


def test_rotation() -> None:
    old = Keyring({1: KEY_1}, current=1)
    token_v1 = old.encrypt(SECRET, AAD)

    both = Keyring.parse(f"2:{b64(KEY_2)},1:{b64(KEY_1)}")  # step 1: new key first
    assert both.current == 2
    assert both.needs_rotation(token_v1)
    assert both.decrypt(token_v1, AAD) == SECRET  # old tokens still decrypt

    token_v2 = both.reencrypt(token_v1, AAD)  # step 2: re-encrypt everything
    assert both.version_of(token_v2) == 2
    assert not both.needs_rotation(token_v2)
    assert both.reencrypt(token_v2, AAD) == token_v2
    with pytest.raises(DecryptionFailed):
        both.reencrypt(token_v1, b"wrong owner")

    new_only = Keyring.parse(f"2:{b64(KEY_2)}")  # step 3: retire the old key
    assert new_only.decrypt(token_v2, AAD) == SECRET
    with pytest.raises(UnknownKeyVersion):
        new_only.decrypt(token_v1, AAD)


def test_parse_env_and_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LOCKGATE_MASTER_KEYS", f" 2:{b64(KEY_2)} , 1:{b64(KEY_1).rstrip('=')}")
    ring = Keyring.from_env()
    assert (ring.current, ring.versions) == (2, (1, 2))
    path = tmp_path / "master-keys"
    urlsafe = base64.urlsafe_b64encode(KEY_1).decode()
    path.write_text(f"# rotated 2025-01\n5:{b64(KEY_2)}\n\n1:{urlsafe}\n")
    ring = Keyring.from_file(path)
    assert (ring.current, ring.versions) == (5, (1, 5))
    assert ring.decrypt(Keyring({1: KEY_1}, current=1).encrypt(SECRET, AAD), AAD) == SECRET


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "no master keys"),
        (b64(KEY_1), "entry 1 is not 'version:base64key'"),
        (f"x:{b64(KEY_1)}", "entry 1 is not"),
        (f"1:{b64(KEY_1)},-2:{b64(KEY_2)}", "entry 2 is not"),
        (f"1:{b64(KEY_1)},1:{b64(KEY_2)}", "version 1 is given twice"),
        ("1:not base64!", "version 1 is not valid base64"),
        (f"1:{b64(KEY_1[:16])}", "version 1 is 16 bytes; 32 are required"),
        (f"0:{b64(KEY_1)}", "outside"),
        (f"1:{b64(KEY_1)},99999999999:{b64(KEY_2)}", "entry 2 is not"),
    ],
)
def test_parse_errors(value: str, reason: str) -> None:
    with pytest.raises(KeyringError, match=reason) as caught:
        Keyring.parse(value)
    assert b64(KEY_1) not in str(caught.value)
    assert b64(KEY_2) not in str(caught.value)


def test_loading_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LOCKGATE_MASTER_KEYS", raising=False)
    with pytest.raises(KeyringError, match="LOCKGATE_MASTER_KEYS is not set"):
        Keyring.from_env()
    with pytest.raises(KeyringError, match="cannot read master key file"):
        Keyring.from_file(tmp_path / "absent")
    with pytest.raises(KeyringError, match="current key version 2"):
        Keyring({1: KEY_1}, current=2)


def test_nothing_secret_in_messages_or_repr() -> None:
    ring = Keyring({1: KEY_1}, current=1)
    assert repr(ring) == "Keyring(versions=[1], current=1)"
    token = ring.encrypt(SECRET, AAD)
    with pytest.raises(DecryptionFailed) as caught:
        ring.decrypt(token, b"other")
    text = str(caught.value)
    assert "sk-upstream" not in text
    assert token.hex()[:16] not in text


def test_generated_keys_work() -> None:
    key = Keyring.generate_key()
    assert len(key) == 32
    ring = Keyring.parse(f"1:{b64(key)}")
    assert ring.decrypt(ring.encrypt(SECRET, AAD), AAD) == SECRET
