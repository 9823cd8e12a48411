import time

import jwt
import pytest

from pushplat.auth import ApiKeyChecker, AuthError, IncompleteHello, PushAuthHandler, mint_token

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
