"""MEDIAMUX_CONFIRM_USD and MEDIAMUX_STATE_KEYS as read at start-up, the request-state keys they make,
and the question put to the user."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mediamux.config import Settings
from mediamux.jobs.engine import SpendQuote
from mediamux.server.state_keys import request_state_security
from mediamux.tools.confirm import question

KEY_A = "a" * 16 + "0123456789abcdef0123456789abcdef"
KEY_B = "b" * 16 + "0123456789abcdef0123456789abcdef"


def settings(**env: str) -> Settings:
    return Settings(MEDIAMUX_HOME="/nonexistent-home", **env)


def test_state_keys_are_a_comma_separated_ring_held_as_secrets_and_masked_in_logs() -> None:
    s = settings(MEDIAMUX_STATE_KEYS=f" {KEY_A} , {KEY_B},")

    assert [k.get_secret_value() for k in s.state_keys] == [KEY_A, KEY_B]
    assert KEY_A not in repr(s) and {KEY_A, KEY_B} <= set(s.secrets())


def test_a_short_state_key_is_refused_at_start_up_saying_how_to_make_one_without_echoing_it() -> None:
    with pytest.raises(ValidationError) as refused:
        settings(MEDIAMUX_STATE_KEYS=f"{KEY_A},hunter2-not-random")

    message = str(refused.value)
    assert "MEDIAMUX_STATE_KEYS: key 2 is 18 characters" in message and "secrets.token_hex(32)" in message
    assert "hunter2" not in message


def test_a_state_key_listed_twice_is_refused() -> None:
    with pytest.raises(ValidationError, match="the same key twice"):
        settings(MEDIAMUX_STATE_KEYS=f"{KEY_A},{KEY_A}")


def test_confirm_usd_is_unset_when_empty_and_never_negative() -> None:
    assert settings(MEDIAMUX_CONFIRM_USD="").confirm_usd is None
    assert settings(MEDIAMUX_CONFIRM_USD="0.25").confirm_usd == 0.25
    with pytest.raises(ValidationError):
        settings(MEDIAMUX_CONFIRM_USD="-1")


def test_servers_given_the_same_keys_open_each_others_state_and_the_default_key_is_each_processs_own() -> (
    None
):
    sealed = request_state_security(settings(MEDIAMUX_STATE_KEYS=f"{KEY_A},{KEY_B}")).codec.seal(b"state")
    rotated = request_state_security(settings(MEDIAMUX_STATE_KEYS=f"{KEY_B},{KEY_A}")).codec
    stranger = request_state_security(settings(MEDIAMUX_STATE_KEYS=KEY_B)).codec
    defaults = [request_state_security(settings()).codec for _ in range(2)]

    assert rotated.unseal(sealed) == b"state"  # either order of the ring opens it
    with pytest.raises(Exception, match="unknown key"):
        stranger.unseal(sealed)
    with pytest.raises(Exception, match="unknown key"):
        defaults[1].unseal(defaults[0].seal(b"state"))


def quote(estimate: float | None, **budget: float) -> SpendQuote:
    return SpendQuote("muapi", "generate", "MuAPI", "veo3-text-to-video", "k", estimate, **budget)


def test_the_question_names_the_tool_the_model_the_estimate_and_the_budget_left() -> None:
    assert (
        question("muapi_generate", quote(3.2))
        == "muapi_generate: MuAPI veo3-text-to-video, estimated $3.20. Spend it?"
    )
    assert question("muapi_generate", quote(3.2, reserve_usd=3.2, budget_usd=10, committed_usd=2.5)) == (
        "muapi_generate: MuAPI veo3-text-to-video, estimated $3.20; $7.50 of the $10.00 budget left. Spend it?"
    )
    assert question("muapi_generate", quote(None, reserve_usd=1, budget_usd=10, committed_usd=0)) == (
        "muapi_generate: MuAPI veo3-text-to-video, price not known in advance ($1.00 held against the budget); "
        "$10.00 of the $10.00 budget left. Spend it?"
    )
