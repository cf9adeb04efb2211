"""``python -m tests.load.soak``: the bounded load and soak run (``make soak``); exits 1 when it fails.

Example: ``python -m tests.load.soak --streams 1000 --duration 600 --rate 20 --workers 2 --redis-url
redis://127.0.0.1:6379/15``. Refuses any host but loopback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tests.load.harness import NotLoopback, SoakConfig, run_soak


def parse(argv: Sequence[str] | None = None) -> SoakConfig:
    p = argparse.ArgumentParser(prog="python -m tests.load.soak", description=__doc__)
    p.add_argument("--streams", type=int, default=200, help="concurrent streams")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load; the run then stops")
    p.add_argument("--rate", type=float, default=20.0, help="tokens/s per stream at the fake engine")
    p.add_argument("--tokens", type=int, default=40, help="content tokens per stream")
    p.add_argument("--report-every", type=float, default=60.0, help="seconds between report lines")
    p.add_argument(
        "--workers", type=int, default=1, help="gateway workers (above 1: per-worker limits or Redis)"
    )
    p.add_argument("--redis-url", help="share rate limits through this Redis (loopback), own key prefix")
    p.add_argument("--redis-timeout-ms", type=int, help="the gateway's bound on each Redis command")
    p.add_argument("--gateway-url", help="load this running gateway (loopback) instead of starting one")
    p.add_argument("--gateway-pid", type=int, action="append", default=[], help="its process, for RSS/fds")
    p.add_argument("--model", default="Qwen/Qwen3-8B", help="model name the gateway serves")
    args = p.parse_args(argv)
    try:
        return SoakConfig(
            streams=args.streams,
            duration_s=args.duration,
            rate=args.rate,
            tokens=args.tokens,
            report_every_s=args.report_every,
            workers=args.workers,
            redis_url=args.redis_url,
            redis_timeout_ms=args.redis_timeout_ms,
            gateway_url=args.gateway_url,
            gateway_pids=tuple(args.gateway_pid),
            model=args.model,
        )
    except (NotLoopback, ValueError) as exc:
        p.error(str(exc))
        raise  # p.error exits; this keeps the type checker informed


def main(argv: Sequence[str] | None = None) -> int:
    result = run_soak(parse(argv))
    growth = result.rss_growth
    print(
        f"summary: ok={result.tally.done} errors={result.tally.errors} without_done={result.tally.no_done} "
        f"rss_growth_after_first_third={'n/a' if growth is None else f'{growth:+.1%}'} "
        f"fds_baseline={result.baseline.fds if result.baseline else 'n/a'} "
        f"fds_after={result.after.fds if result.after else 'n/a'}"
    )
    problems = result.problems()
    for problem in problems:
        print("FAIL:", problem)
    print("PASS" if not problems else "FAIL")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
