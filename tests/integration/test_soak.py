"""The soak in CI: 200 concurrent streams for 60 s through a real ``gateway serve`` process in front of the
fake engine (20 tokens/s per stream). Every stream ends with ``[DONE]``, none fails, RSS is flat after the
warm-up and the open fds come back to their baseline. ``make soak`` runs the long version."""

from __future__ import annotations

import pytest

from tests.load.harness import NotLoopback, SoakConfig, run_soak


def test_two_hundred_streams_for_a_minute() -> None:
    lines: list[str] = []
    result = run_soak(SoakConfig(streams=200, duration_s=60, report_every_s=20), emit=lines.append)
    print("\n".join(lines))  # the minute's report, shown with -s or on failure
    assert result.problems() == [], "\n".join(lines)
    assert result.tally.done >= 200  # every slot finished streams, not just started them
    assert result.rss_growth is not None and result.fd_excess is not None  # both were measured


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.1:8080", "http://example.com", "http://127.0.0.1.nip.io:8080", "http://0.0.0.0:8080"],
)
def test_the_harness_refuses_any_host_but_loopback(url: str) -> None:
    with pytest.raises(NotLoopback):
        SoakConfig(gateway_url=url)
    with pytest.raises(NotLoopback):
        SoakConfig(redis_url=url.replace("http", "redis"))


def test_loopback_targets_are_accepted() -> None:
    for url in ("http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080", "http://127.0.0.2"):
        assert SoakConfig(gateway_url=url).gateway_url == url
