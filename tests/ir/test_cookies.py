"""Cookies: app id + object id, and the reverse index a trace uses."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wyvern.ir import cookies
from wyvern.ir.cookies import APPS, CookieIndex


def test_layout() -> None:
    c = cookies.encode("security_groups", 42)
    assert c >> 56 == APPS["security_groups"]
    assert c & ((1 << 56) - 1) == 42
    assert cookies.decode(c) == ("security_groups", 42)


def test_uuid_hash_is_stable_case_insensitive_and_flagged() -> None:
    u = str(uuid.UUID(int=12345))
    a = cookies.encode("l3", u)
    assert a == cookies.encode("l3", u.upper())
    assert cookies.decode(a)[1] & cookies.HASHED
    assert a != cookies.encode("nat", u)  # same object, other app


@given(st.sampled_from(sorted(APPS)), st.integers(0, (1 << 55) - 1))
def test_round_trip(app: cookies.AppName, key: int) -> None:
    assert cookies.decode(cookies.encode(app, key)) == (app, key)


def test_refused_cookies() -> None:
    with pytest.raises(ValueError):
        cookies.decode(0)
    with pytest.raises(ValueError):
        cookies.decode(0xFF << 56)
    with pytest.raises(ValueError):
        cookies.encode("l2", 1 << 55)


def test_index_explains_registered_and_unknown_cookies() -> None:
    idx = CookieIndex()
    rule = "0f2b6c4e-6f3c-4b4e-9d64-1b7c2b9e0a11"
    c = idx.register("security_groups", rule)
    assert c in idx and len(idx) == 1
    assert str(idx.explain(c)) == f"security_groups {rule}"
    other = cookies.encode("l2", 7)
    assert idx.explain(other).object_id is None
    assert "l2 key 0x7" in str(idx.explain(other))
    assert "unknown" in str(idx.explain(0))
    idx.forget(c)
    assert c not in idx


def test_index_refuses_collisions() -> None:
    idx = CookieIndex()
    idx.register("l2", 7)
    idx.register("l2", 7)  # the same object again is fine
    idx._by_cookie[cookies.encode("l2", 8)] = ("l2", "someone-else")
    with pytest.raises(ValueError, match="collides"):
        idx.register("l2", 8)


@given(st.text(max_size=40), st.sampled_from(sorted(APPS)))
def test_memoised_hash_equals_a_cold_one(object_id: str, app: cookies.AppName) -> None:
    """encode() remembers each id's hash: warm, cold and case/space variants agree."""
    warm = cookies.encode(app, object_id)
    assert cookies.encode(app, object_id) == warm
    cookies.clear_caches()
    assert cookies.encode(app, object_id) == warm
    assert cookies.encode(app, f" {object_id.upper()} ") == cookies.encode(
        app, f"{object_id.upper()}"
    )
    assert cookies.encode(app, 7) == (APPS[app] << 56) | 7  # small keys are not hashed
