"""Command line: ``python -m examples.hr_assistant [options] ingest DIR | ask QUESTION [--json]``.

Every option has an ``HR_*`` environment variable. The app authenticates as its own OAuth client (client
credentials at ``<gateway>/oauth/token``); no static token is read from anywhere.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from examples.hr_assistant.chunking import HandbookError
from examples.hr_assistant.commands import Models, ask, ingest
from examples.hr_assistant.errors import AppError
from examples.hr_assistant.menshen import Menshen
from examples.hr_assistant.store import Index, IndexProblem
from examples.hr_assistant.tokens import TokenSource

DEFAULT_GATEWAY: Final = "http://127.0.0.1:8080"
DEFAULT_CLIENT_ID: Final = "hr-assistant"
# The cpu-demo profile's models; on the GPU node pass --chat-model / --embedding-model.
DEFAULT_CHAT_MODEL: Final = "smollm2-135m-instruct"
DEFAULT_EMBEDDING_MODEL: Final = "all-minilm-l6-v2"
DEFAULT_DB: Final = "hr-assistant.sqlite3"


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="python -m examples.hr_assistant", description="Ask the staff handbook, through Menshen."
    )
    p.add_argument(
        "--gateway", default=env("HR_GATEWAY_URL", DEFAULT_GATEWAY), help="Menshen's URL (HR_GATEWAY_URL)"
    )
    p.add_argument(
        "--client-id", default=env("HR_CLIENT_ID", DEFAULT_CLIENT_ID), help="OAuth client id (HR_CLIENT_ID)"
    )
    p.add_argument(
        "--client-secret", default=env("HR_CLIENT_SECRET"), help="OAuth client secret (HR_CLIENT_SECRET)"
    )
    p.add_argument(
        "--scope", default=env("HR_SCOPE"), help="scopes to ask for (HR_SCOPE); default: all granted"
    )
    p.add_argument("--db", type=Path, default=Path(env("HR_DB", DEFAULT_DB)), help="SQLite index (HR_DB)")
    p.add_argument("--chat-model", default=env("HR_CHAT_MODEL", DEFAULT_CHAT_MODEL), help="(HR_CHAT_MODEL)")
    p.add_argument(
        "--embedding-model",
        default=env("HR_EMBEDDING_MODEL", DEFAULT_EMBEDDING_MODEL),
        help="(HR_EMBEDDING_MODEL)",
    )
    p.add_argument("--max-retries", type=int, default=3, help="waits after a 429 before giving up")
    sub = p.add_subparsers(dest="command", required=True)
    ing = sub.add_parser("ingest", help="chunk and embed a handbook directory into the index (replaces it)")
    ing.add_argument("directory", type=Path)
    ing.add_argument("--batch-size", type=int, default=16, help="texts per embeddings request")
    q = sub.add_parser("ask", help="stream a cited answer to a question")
    q.add_argument("question")
    q.add_argument("--json", action="store_true", help='print {"answer", "sources", "stopped"} only')
    q.add_argument("-k", "--top-k", type=int, default=4, help="handbook chunks given to the model")
    q.add_argument("--max-tokens", type=int, default=400, help="longest answer, in tokens")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.client_secret:
        print("hr-assistant: no client secret (--client-secret or HR_CLIENT_SECRET)", file=sys.stderr)
        return 2
    tokens = TokenSource(args.gateway, args.client_id, args.client_secret, args.scope)
    menshen = Menshen(args.gateway, tokens, max_retries=args.max_retries)
    index = Index(args.db)
    models = Models(chat=args.chat_model, embedding=args.embedding_model)
    try:
        if args.command == "ingest":
            return ingest(menshen, index, models, args.directory, args.batch_size, sys.stdout)
        return ask(
            menshen,
            index,
            models,
            args.question,
            k=args.top_k,
            max_tokens=args.max_tokens,
            as_json=args.json,
            out=sys.stdout,
        )
    except (AppError, HandbookError, IndexProblem) as exc:
        print(f"hr-assistant: {exc}", file=sys.stderr)
        return 1
    finally:
        menshen.close()
        tokens.close()
