"""What the gateway adds to an embeddings call: a 16-string batch, direct to the fake engine and through the
gateway, side by side in one run.

Processes: the fake engine serving an embedding model (384 dimensions, as all-MiniLM-L6-v2), the gateway
(``python -m gateway serve``, the default policy bundle: the input guard scans every string) and this
raw-socket client. Requests alternate between the two paths on kept-alive connections, so both see the same
machine noise. Target (issue 16): the gateway adds <= 1 ms to the median latency. Also printed: the gateway's
CPU per request. Exits 0; prints PASS/FAIL.

    .venv/bin/python tests/perf/bench_embeddings.py [--requests 400] [--format float|base64] [--profile OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `tests.perf` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.perf._bench_common import (
    Conn,
    bench_policies,
    cpu_seconds,
    load_average,
    median,
    post_bytes,
    runner,
    start_fake,
    start_gateway,
    stop_process,
    verdict,
)

MODEL = "all-minilm-l6-v2"
TARGET_MS = 1.0


def batch(encoding_format: str, size: int = 16) -> bytes:
    """``size`` handbook-like passages of about 300 characters each."""
    texts = [
        f"Section {i}: employees with {i + 2} years of service receive {10 + i} days of annual leave, "
        "to be requested through the HR portal at least two weeks in advance; unused days carry over "
        "to the first quarter of the next year, after which they lapse unless a manager approves."
        for i in range(size)
    ]
    return json.dumps({"model": MODEL, "input": texts, "encoding_format": encoding_format}).encode()


async def measure(engine_port: int, gateway_port: int, body: bytes, requests: int) -> dict[str, list[float]]:
    direct = await Conn.open(engine_port)
    through = await Conn.open(gateway_port)
    paths = {"direct": (direct, engine_port), "gateway": (through, gateway_port)}
    times: dict[str, list[float]] = {"direct": [], "gateway": []}
    try:
        for i in range(requests + 50):
            for name, (conn, port) in paths.items():
                seconds, _ = await conn.json(post_bytes("/v1/embeddings", body, port))
                if i >= 50:  # warm-up: connections, caches, the gateway's first model read
                    times[name].append(seconds)
    finally:
        direct.close()
        through.close()
    return times


def run(body: bytes, size: int, requests: int, profile: Path | None) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        root = Path(tmp)
        engine, engine_port = start_fake(1, extra=["--embedding-model", MODEL])
        try:
            gateway, gateway_port, probe = start_gateway(
                f"http://127.0.0.1:{engine_port}",
                bench_policies(root / "policies", passthrough=False),
                root / "data",
                profile_to=profile,
            )
            try:
                probe.start()
                cpu0 = cpu_seconds(gateway.pid)
                times = runner()(measure(engine_port, gateway_port, body, requests))
                cpu = cpu_seconds(gateway.pid) - cpu0
                probe.stop()
            finally:
                stop_process(gateway)
        finally:
            stop_process(engine)
    direct, through = median(times["direct"]) * 1000, median(times["gateway"]) * 1000
    p90 = {k: sorted(v)[int(len(v) * 0.9)] * 1000 for k, v in times.items()}
    added = through - direct
    print(f"{size} string(s) of ~300 characters")
    print(f"  direct to the engine   median {direct:7.3f} ms   p90 {p90['direct']:7.3f} ms")
    print(f"  through the gateway    median {through:7.3f} ms   p90 {p90['gateway']:7.3f} ms")
    target = f"(target <= {TARGET_MS} ms)  {verdict(added <= TARGET_MS)}" if size == 16 else "(baseline)"
    print(f"  added by the gateway   median {added:7.3f} ms   {target}")
    print(f"  gateway CPU per request {cpu / (requests + 50) * 1000:.3f} ms (warm-up included)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=400, help="requests per path (after 50 of warm-up)")
    p.add_argument("--format", choices=("float", "base64"), default="float")
    p.add_argument("--profile", type=Path, help="write the gateway's cProfile (CPU time) of the run here")
    args = p.parse_args()
    print(f"embeddings, encoding_format={args.format}, {args.requests} requests per path and batch size")
    print(f"load average before: {load_average()}")
    for size in (1, 16):
        run(batch(args.format, size), size, args.requests, args.profile if size == 16 else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
