"""A stand-in for the vLLM server process, driven by environment variables (not a test module).

It accepts vLLM's command line, serves ``/health`` and a key-protected ``/v1/models`` like vLLM,
and records each run in ``FAKE_STATE_DIR`` (``runs.jsonl``: pid, start time, argv, environment
facts; ``exits.jsonl``: time of each failing exit). Behaviours:
  FAKE_FAIL_RUNS=N        the first N runs exit with code 3 before serving
  FAKE_FAIL_SERVED=NAME   every run serving that model name (--served-model-name) exits with code 3
  FAKE_STARTUP_DELAY=S    serve only after S seconds
  FAKE_HEALTH_FAIL_AFTER=S  /health answers 500 once S seconds after serving
  FAKE_IGNORE_TERM=1      ignore SIGTERM (the supervisor must SIGKILL)
  FAKE_GRANDCHILD=1       spawn a sleeping grandchild that inherits stdout (like vLLM's engine core)
  FAKE_ECHO_KEY=1         print the internal key (the supervisor must keep it out of its log file)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--served-model-name", default=None)
    args, _ = parser.parse_known_args()
    state = Path(os.environ["FAKE_STATE_DIR"])
    runs_file = state / "runs.jsonl"
    run = len(runs_file.read_text().splitlines()) + 1 if runs_file.exists() else 1
    record = {
        "run": run,
        "pid": os.getpid(),
        "t": time.time(),
        "argv": sys.argv[1:],
        "has_key": bool(os.environ.get("VLLM_API_KEY")),
        "gateway_env": sorted(k for k in os.environ if k.startswith("GATEWAY_")),
        "kv_space": os.environ.get("VLLM_CPU_KVCACHE_SPACE"),
    }
    with runs_file.open("a") as fh:
        fh.write(json.dumps(record) + "\n")
    print(f"INFO 01-01 00:00:00 [fake] fake engine run {run} starting", flush=True)
    print("WARNING 01-01 00:00:00 [fake] a warning on stderr", file=sys.stderr, flush=True)
    if os.environ.get("FAKE_ECHO_KEY") == "1":
        print(f"INFO 01-01 00:00:00 [fake] api key {os.environ['VLLM_API_KEY']}", flush=True)

    if os.environ.get("FAKE_IGNORE_TERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.environ.get("FAKE_GRANDCHILD") == "1":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        (state / f"grandchild-{run}").write_text(str(child.pid))
    failing = os.environ.get("FAKE_FAIL_SERVED")
    if run <= int(os.environ.get("FAKE_FAIL_RUNS", "0")) or (failing and failing == args.served_model_name):
        print(f"ERROR 01-01 00:00:00 [fake] run {run} failing on purpose", flush=True)
        with (state / "exits.jsonl").open("a") as fh:
            fh.write(json.dumps({"run": run, "t": time.time()}) + "\n")
        sys.exit(3)
    time.sleep(float(os.environ.get("FAKE_STARTUP_DELAY", "0")))

    key = os.environ["VLLM_API_KEY"]
    serving_since = time.monotonic()
    health_fail_after = float(os.environ.get("FAKE_HEALTH_FAIL_AFTER", "inf"))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/health":
                ok = time.monotonic() - serving_since < health_fail_after
                self._reply(200 if ok else 500, b"")
            elif self.path.startswith("/v1/"):
                if self.headers.get("Authorization") != f"Bearer {key}":
                    self._reply(401, b'{"error": "Unauthorized"}')
                else:
                    self._reply(200, b'{"object": "list", "data": []}')
            else:
                self._reply(404, b"")

        def _reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"INFO 01-01 00:00:00 [fake] serving on {args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
