"""What the gateway costs in front of the real engine: vLLM on CPU with the demo model, side by side.

Starts vLLM once through ``EngineSupervisor(SupervisorConfig(profile="cpu-demo"))`` (the demo model is
prepared in $GATEWAY_DATA_DIR or ~/.cache/menshen on first use), runs ``gateway serve`` in front of it with
the engine's internal key, and streams the same prompt directly and through the gateway in alternating
rounds at concurrency 1 and 8. Tokens are counted from ``usage`` (the gateway does not accept
``ignore_eos``), so the figure is completion tokens per second of wall time. Target (issue 3): the gateway
costs < 2% of throughput. Exits 0; prints PASS/FAIL.

Three paths alternate: ``direct`` (the client's body straight to vLLM), ``direct+policy`` (straight to vLLM,
but the body the gateway would send: the policy's sampling defaults and vLLM's repetition-detection
backstop added) and ``gateway``. The gateway's own cost is ``gateway`` against ``direct+policy`` (the engine
does the same work); ``direct+policy`` against ``direct`` is what the policy's engine-side settings cost.

    .venv/bin/python tests/perf/bench_engine.py [--rounds 3] [--max-tokens 64] [--concurrency 1,8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `tests.perf` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine import EngineSupervisor, SupervisorConfig
from tests.perf._bench_common import (
    Conn,
    StreamResult,
    bench_policies,
    chat_body,
    cpu_seconds,
    load_average,
    median,
    post_bytes,
    start_gateway,
    stop_process,
    verdict,
)

PATH = "/v1/chat/completions"
PROMPT = (
    "Write a long, detailed story about a lighthouse keeper on a remote island who finds a message in a "
    "bottle. Describe the island, the weather, the keeper's daily routine and what happens next."
)


@dataclass
class Side:
    """What one target (direct or gateway) did at one concurrency, summed over its rounds."""

    tokens: int = 0
    seconds: float = 0.0
    requests: int = 0
    ttft_s: list[float] = field(default_factory=list)
    finishes: dict[str, int] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_request(self) -> float:
        return self.tokens / self.requests if self.requests else 0.0


async def _round(
    port: int, request: bytes, concurrency: int, per_worker: int
) -> tuple[list[StreamResult], float]:
    """``concurrency`` connections, each streaming ``per_worker`` answers back to back; (results, seconds)."""
    out: list[StreamResult] = []

    async def worker() -> None:
        conn = await Conn.open(port)
        try:
            for _ in range(per_worker):
                result = await conn.stream(request)
                if result.completion_tokens is None:
                    raise RuntimeError("the stream carried no usage")
                out.append(result)
        finally:
            conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out, time.perf_counter() - t0


async def _run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="menshen-bench-engine-"))
    t_start = time.perf_counter()
    supervisor = EngineSupervisor(
        SupervisorConfig(profile="cpu-demo", startup_timeout_s=args.startup_timeout)
    )
    await supervisor.start()
    gateway = None
    try:
        await supervisor.wait_ready(args.startup_timeout)
        startup_s = time.perf_counter() - t_start
        key_file = tmp / "engine.key"
        key_file.write_text(supervisor.api_key, encoding="utf-8")
        key_file.chmod(0o600)
        engine_port = int(supervisor.base_url.rsplit(":", 1)[1])
        policies = bench_policies(tmp / "policies", passthrough=False)
        gateway, gport, _probe = await asyncio.to_thread(
            start_gateway, supervisor.base_url, policies, tmp / "data", api_key_file=key_file
        )
        model = supervisor.served_model_name
        body = chat_body(stream=True, max_tokens=args.max_tokens, model=model, prompt=PROMPT, temperature=0.0)
        engine_auth = {"authorization": f"Bearer {supervisor.api_key}"}
        requests = {
            "direct": (engine_port, post_bytes(PATH, body, engine_port, engine_auth)),
            "direct+policy": (
                engine_port,
                post_bytes(PATH, _upstream_body(policies, body), engine_port, engine_auth),
            ),
            "gateway": (gport, post_bytes(PATH, body, gport)),
        }
        for port, request in requests.values():  # warm up both paths (prefix cache, pools)
            await _round(port, request, 2, 1)

        results: dict[int, dict[str, Side]] = {}
        cpu = {"gateway": 0.0}
        for concurrency in args.concurrency:
            sides = results[concurrency] = {name: Side() for name in requests}
            for i in range(args.rounds):
                order = list(requests) if i % 2 == 0 else list(reversed(requests))
                for name in order:
                    port, request = requests[name]
                    g0 = cpu_seconds(gateway.pid)
                    got, seconds = await _round(port, request, concurrency, args.per_worker)
                    if name == "gateway":
                        cpu["gateway"] += cpu_seconds(gateway.pid) - g0
                    side = sides[name]
                    side.seconds += seconds
                    side.requests += len(got)
                    side.tokens += sum(r.completion_tokens or 0 for r in got)
                    side.ttft_s += [r.first_text_s for r in got]
        gw_tokens = sum(s["gateway"].tokens for s in results.values())
        _report(args, results, startup_s, cpu["gateway"], gw_tokens, model)
    finally:
        if gateway is not None:
            await asyncio.to_thread(stop_process, gateway)
        await supervisor.stop()


def _upstream_body(policies: Path, body: bytes) -> bytes:
    """What the gateway sends upstream for ``body`` under ``policies`` (the engine's share of the policy)."""
    from gateway.guardrails.loop_check import repetition_detection_params
    from gateway.policy.loader import load_bundle
    from gateway.protocol.requests import ChatCompletionRequest, decode_request
    from gateway.relay.upstream import build_upstream_call

    bundle = load_bundle(policies).bundle
    request = decode_request(body, ChatCompletionRequest)
    return build_upstream_call(
        request, bundle.generation, bundle.loops, repetition_detection_params(bundle.loops)
    ).body


def _report(
    args: argparse.Namespace,
    results: dict[int, dict[str, Side]],
    startup_s: float,
    gateway_cpu_s: float,
    gateway_tokens: int,
    model: str,
) -> None:
    print(
        f"\nMenshen engine benchmark: vLLM CPU, {model}; {os.cpu_count()} CPUs, load average {load_average()}"
    )
    print(
        f"engine ready in {startup_s:.0f} s; prompt of {len(PROMPT)} characters, max_tokens {args.max_tokens}, "
        f"temperature 0; {args.rounds} alternating rounds per concurrency, {args.per_worker} answers per "
        f"connection per round; tokens from usage\n"
    )
    head = ["concurrency", "path", "answers", "tokens/answer", "tokens/s", "TTFT median ms", "TTFT p90 ms"]
    rows: list[list[str]] = []
    for concurrency, sides in results.items():
        for name, side in sides.items():
            ttft = sorted(side.ttft_s)
            p90 = ttft[int(len(ttft) * 0.9)] if ttft else float("nan")
            rows.append(
                [
                    str(concurrency),
                    name,
                    str(side.requests),
                    f"{side.tokens_per_request:.1f}",
                    f"{side.tokens_per_s:.1f}",
                    f"{median(side.ttft_s) * 1e3:.1f}",
                    f"{p90 * 1e3:.1f}",
                ]
            )
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
    print(
        f"\ngateway CPU: {gateway_cpu_s:.2f} s for {gateway_tokens} relayed tokens "
        f"({gateway_cpu_s / max(gateway_tokens, 1) * 1e6:.0f} us/token, per-request work included); with a CPU "
        f"engine on the same cores every gateway CPU second is taken from inference"
    )
    print("\nTargets (the gateway against the engine doing the same work, direct+policy):")
    for concurrency, sides in results.items():
        d, p, g = sides["direct"], sides["direct+policy"], sides["gateway"]
        cost = 1 - g.tokens_per_s / p.tokens_per_s if p.tokens_per_s else float("nan")
        added = (median(g.ttft_s) - median(p.ttft_s)) * 1e3
        print(
            f"  [{verdict(cost < 0.02)}] concurrency {concurrency}: gateway costs {cost:+.1%} of tokens/s (< 2%); "
            f"TTFT {added:+.1f} ms median"
        )
        policy = 1 - p.tokens_per_s / d.tokens_per_s if d.tokens_per_s else float("nan")
        total = 1 - g.tokens_per_s / d.tokens_per_s if d.tokens_per_s else float("nan")
        print(
            f"  (info) concurrency {concurrency}: the policy's engine-side settings cost {policy:+.1%}; "
            f"gateway against the plain direct request {total:+.1%}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per path and concurrency")
    parser.add_argument("--per-worker", type=int, default=2, help="answers per connection per round")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", default="1,8", help="comma list")
    parser.add_argument("--startup-timeout", type=float, default=600.0)
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    asyncio.run(_run(args))


if __name__ == "__main__":
    main()
