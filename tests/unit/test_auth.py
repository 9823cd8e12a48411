import time

import jwt
import pytest

from pushplat.auth import (
    ANONYMOUS_SENDER,
    ApiKeyChecker,
    AuthError,
    IncompleteHello,
    PushAuthHandler,
    key_fingerprint,
    mint_token,
)
from pushplat.limits import LimitExceeded

SECRET = "unit-test-secret-0123456789abcdef0123"


def test_minted_token_identifies_user_and_device():
    token = mint_token(SECRET, "u1", "d1", ttl_seconds=60)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "u1" and claims["device"] == "d1"
    assert 55 <= claims["exp"] - time.time() <= 61
    identity = PushAuthHandler(SECRET).identify(token, "ignored", "ignored")
    assert (identity.user_id, identity.device_id) == ("u1", "d1")


def test_none_algorithm_is_refused():
    forged = jwt.encode({"sub": "u", "device": "d", "exp": int(time.time()) + 60}, None, algorithm="none")
    with pytest.raises(AuthError, match="invalid token"):
        PushAuthHandler(SECRET).identify(forged, "", "")


def test_auth_off_trusts_hello_ids_and_needs_a_device():
    handler = PushAuthHandler("")
    assert handler.identify("", "u", "d").user_id == "u"
    assert handler.identify("", "", "d").user_id == "d"  # a device without a user is its own user
    with pytest.raises(IncompleteHello, match="device_id is required"):
        handler.identify("", "u", "")


def test_api_keys():
    checker = ApiKeyChecker(["a", "b"])
    checker.check([("authorization", "Bearer b")])
    for metadata, text in (
        ([], "missing"),
        ([("authorization", "Bearer c")], "unknown"),
        ([("authorization", "b")], "malformed"),
    ):
        with pytest.raises(AuthError, match=text):
            checker.check(metadata)
    ApiKeyChecker([]).check([])  # no keys: open


def test_named_keys_share_one_sender_and_bare_keys_get_a_fingerprint():
    checker = ApiKeyChecker(["billing:old-key", "billing:new-key", "lonely-key"])
    assert checker.check([("authorization", "Bearer old-key")]) == "billing"
    assert checker.check([("authorization", "Bearer new-key")]) == "billing"
    lonely = checker.check([("authorization", "Bearer lonely-key")])
    assert lonely == key_fingerprint("lonely-key") and lonely.startswith("key:") and "lonely" not in lonely
    assert key_fingerprint("lonely-key") == key_fingerprint("lonely-key") != key_fingerprint("other")
    assert ApiKeyChecker([]).check([]) == ANONYMOUS_SENDER
    # A key given under two names, a bad name, or a name without a key: refused at start-up.
    for entries, text in (
        (["a:k", "b:k"], "two senders"),
        (["bad name:k"], "a sender name is"),
        (["billing:"], "is empty"),
    ):
        with pytest.raises(ValueError, match=text):
            ApiKeyChecker(entries)


def test_token_claims_are_checked_as_ids():
    handler = PushAuthHandler(SECRET)
    for user, device, text in (("", "d", "'sub' is empty"), ("u", "x" * 129, "129 bytes"), ("u", "a\nb", r"U\+000A")):
        with pytest.raises(LimitExceeded, match=text):
            handler.identify(mint_token(SECRET, user, device), "", "")
    with pytest.raises(LimitExceeded, match="8192 bytes"):
        handler.identify("x" * 9000, "", "")
    with pytest.raises(AuthError, match="not a well-formed") as info:
        handler.identify("\xff\xfe.e30.x", "", "")
    assert "codec" not in str(info.value)


def test_two_authorization_entries_are_refused_whichever_comes_first():
    keys = ApiKeyChecker(["key-1"])
    for entries in ((("authorization", "Bearer key-1"), ("authorization", "Bearer nope")),
                    (("authorization", "Bearer nope"), ("authorization", "Bearer key-1"))):  # fmt: skip
        with pytest.raises(AuthError, match="2 'authorization' metadata entries"):
            keys.check(entries)
