"""Relayed chunks per second with 1 and 2 gateway workers, side by side in one run.

Processes: the fake vLLM engine at full speed, the gateway (``python -m gateway serve --workers N``, the
default policy bundle with a tier that cannot throttle, per-worker limits) and a load process of its own
streaming ``--streams`` concurrent chat completions back to back for ``--seconds``. It prints, per worker
count, the SSE chunks the client received per second and that figure per worker.

    .venv/bin/python tests/perf/bench_workers.py [--workers 1,2] [--seconds 8] [--streams 64] [--tokens 256]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `tests.perf` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.perf._bench_common import (
    ROOT,
    bench_policies,
    chat_body,
    load_average,
    post_bytes,
    runner,
    start_fake,
    start_gateway,
    stop_process,
    stream_load,
)

PATH = "/v1/chat/completions"


def _load(port: int, streams: int, seconds: float) -> None:
    """In the load process: stream and print the result as JSON."""
    request = post_bytes(PATH, chat_body(stream=True), port)
    result = runner()(stream_load(port, request, streams, seconds))
    print(json.dumps({"events": result.events, "elapsed": result.elapsed_s, "errors": result.errors,
                      "first_error": result.first_error, "requests": result.requests}))  # fmt: skip


def _measure(port: int, streams: int, seconds: float) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--load", str(port), "--streams", str(streams), "--seconds", str(seconds)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    data: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return data


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", default="1,2")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--streams", type=int, default=64)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--load", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.load is not None:
        _load(args.load, args.streams, args.seconds)
        return 0

    counts = [int(n) for n in args.workers.split(",")]
    fake, fake_port = start_fake(args.tokens)
    rows: list[tuple[int, float, float, int]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            policies = bench_policies(Path(tmp) / "policies", passthrough=False)
            for n in counts:
                data_dir = Path(tmp) / f"data-{n}"
                env = {"GATEWAY_WORKERS": str(n), "GATEWAY_PER_WORKER_LIMITS": "true"}
                gateway, port, _probe = start_gateway(
                    f"http://127.0.0.1:{fake_port}", policies, data_dir, env=env, startup_s=120
                )
                try:
                    _measure(port, args.streams, 2.0)  # warm-up: every worker has served
                    data = _measure(port, args.streams, args.seconds)
                finally:
                    stop_process(gateway)
                rate = data["events"] / data["elapsed"]
                rows.append((n, rate, rate / n, int(data["errors"])))
    finally:
        stop_process(fake)

    print(f"relayed chunks/s, {args.streams} concurrent streams of {args.tokens} tokens, {args.seconds:.0f} s, "
          f"fake engine at full speed, default bundle; load average {load_average()}")  # fmt: skip
    print(f"{'workers':>8} {'chunks/s':>10} {'per worker':>11} {'errors':>7}")
    for n, rate, per, errors in rows:
        print(f"{n:>8} {rate:>10,.0f} {per:>11,.0f} {errors:>7}")
    if len(rows) > 1:
        print(f"speed-up {rows[-1][0]} vs {rows[0][0]} workers: {rows[-1][1] / rows[0][1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
