"""Standard Webhooks signatures: the spec's own test vector, rotation, tampering, replays."""

from __future__ import annotations

import pytest

from lockgate.webhooks import standard
from lockgate.webhooks.signing import SignatureError, new_secret

# The example in the Standard Webhooks specification (and Svix's libraries' tests).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_specifications_example_is_reproduced() -> None:
    sent = standard.headers([SPEC_SECRET], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)
    assert sent == {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(SPEC_TIMESTAMP),
        "webhook-signature": SPEC_SIGNATURE,
    }
    assert standard.verify(SPEC_BODY, sent, SPEC_SECRET, now=SPEC_TIMESTAMP) == SPEC_TIMESTAMP


def test_during_a_rotation_either_secret_verifies() -> None:
    current, previous = new_secret(), new_secret()
    sent = standard.headers([current, previous], "evt_1", 1_800_000_000, b"{}")
    assert len(sent["webhook-signature"].split(" ")) == 2
    for secret in (current, previous):
        assert standard.verify(b"{}", sent, secret, now=1_800_000_000) == 1_800_000_000
    with pytest.raises(SignatureError, match="no signature matches"):
        standard.verify(b"{}", sent, new_secret(), now=1_800_000_000)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"webhook-id": "evt_other"}, "no signature matches"),
        ({"webhook-timestamp": "1800000001"}, "no signature matches"),
        ({"webhook-timestamp": "soon"}, "not an integer"),
        ({"webhook-signature": ""}, "are needed"),
    ],
)
def test_any_change_to_what_was_signed_is_refused(change: dict[str, str], message: str) -> None:
    secret = new_secret()
    sent = {**standard.headers([secret], "evt_1", 1_800_000_000, b"{}"), **change}
    with pytest.raises(SignatureError, match=message):
        standard.verify(b"{}", sent, secret, now=1_800_000_000)


def test_an_altered_body_and_an_old_signature_are_refused() -> None:
    secret = new_secret()
    sent = standard.headers([secret], "evt_1", 1_800_000_000, b'{"a":1}')
    with pytest.raises(SignatureError, match="no signature matches"):
        standard.verify(b'{"a":2}', sent, secret, now=1_800_000_000)
    with pytest.raises(SignatureError, match="tolerance"):
        standard.verify(b'{"a":1}', sent, secret, now=1_800_000_000 + 301)


def test_a_secret_from_before_the_standard_form_still_signs_correctly() -> None:
    old = "whsec_" + "a-b_" * 10 + "cd"  # URL-safe base64, as secrets were made before
    sent = standard.headers([old], "evt_1", 1_800_000_000, b"{}")
    assert standard.verify(b"{}", sent, old, now=1_800_000_000) == 1_800_000_000
