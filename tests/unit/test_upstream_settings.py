"""``--upstream`` takes several engines: the flag repeated, or a comma-separated value (flag or variable)."""

from __future__ import annotations

import pytest

from gateway.cli import build_parser
from gateway.settings import ConfigError, load_settings, settings_from_args


def test_the_flag_repeated_and_commas_mix() -> None:
    args = build_parser().parse_args(
        ["serve", "--auth", "none", "--upstream", "http://a:1", "--upstream", "http://b:2,http://c:3"]
    )
    assert settings_from_args(args).engine.upstream == ("http://a:1", "http://b:2", "http://c:3")


def test_the_variable_is_comma_separated_and_duplicates_drop() -> None:
    settings = load_settings(environ={"GATEWAY_UPSTREAM": "http://a:1, http://b:2,http://a:1"})
    assert settings.engine.upstream == ("http://a:1", "http://b:2")


def test_one_url_stays_one_upstream() -> None:
    assert load_settings(environ={}, upstream="http://a:1").engine.upstream == ("http://a:1",)


def test_a_bad_url_names_the_flag() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, upstream="http://a:1,ftp://b")
    assert any(p.startswith("--upstream / GATEWAY_UPSTREAM") and "ftp://b" in p for p in info.value.problems)
