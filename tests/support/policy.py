"""Shared test helpers (moved out of tests/unit/policy/conftest.py)."""

from __future__ import annotations

from pathlib import Path

from gateway.guardrails.pipeline import Decision
from gateway.guardrails.verdict import Verdict, strongest
from gateway.policy.sections import PolicyBundle, Where, WordRule

VALID_BUNDLE: dict[str, str] = {
    "limits.yaml": """\
tiers:
  standard:
    requests: 60/minute;2000/day
    tokens: 100000/hour
    concurrency: 4
  batch:
    requests: 10/minute
on_redis_error: fail_closed
""",
    "clients.yaml": """\
clients:
  demo-app:
    tier: standard
    models: ["*"]
    guardrails:
      shadow: [demo.secret]
scopes:
  llm.chat:
    tier: batch
    models: ["qwen3-*"]
default_tier: standard
""",
    "guardrails.yaml": """\
rules:
  - id: demo.secret
    kind: words
    category: secrets
    action: mask
    lists: [secrets]
  - id: demo.banned
    kind: words
    category: banned
    action: block
    words: [forbidden-word, 禁词]
  - id: pii.cn_mobile
    kind: pattern
    category: pii
    action: mask
    pattern: '(?<!\\d)1[3-9]\\d{9}(?!\\d)'
""",
    "generation.yaml": "max_tokens_cap: 2048\ndefault_max_tokens: 512\n",
    "lists/secrets.txt": "# placeholder secrets\nsesame\n\nopen-sesame\n",
}


def write_bundle(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


class WordScanner:
    """Plain substring matching over word rules: enough to exercise snapshots and the CLI plumbing."""

    def __init__(self, bundle: PolicyBundle) -> None:
        self.bundle = bundle
        self.rules: list[tuple[WordRule, list[str]]] = []
        for rule in bundle.guardrails.rules:
            if isinstance(rule, WordRule):
                words = list(rule.words)
                for name in rule.lists:
                    words += bundle.word_lists[name]
                self.rules.append((rule, words))

    def scan(self, text: str, where: Where, client_id: str | None = None) -> Verdict:
        client = self.bundle.clients.clients.get(client_id or "")
        shadowed = set(client.guardrails.shadow) if client and client.guardrails else set()
        hits: list[Decision] = []
        masked = list(text)
        for rule, words in self.rules:
            if where not in rule.where:
                continue
            mode = "shadow" if rule.id in shadowed else rule.mode
            for word in words:
                start = text.find(word)
                while start >= 0:
                    hits.append(
                        Decision(rule.id, rule.category, rule.action, mode, where, start, start + len(word))
                    )
                    if rule.action == "mask" and mode == "enforce":
                        masked[start : start + len(word)] = "*" * len(word)
                    start = text.find(word, start + 1)
        hits.sort(key=lambda h: (h.start, h.rule))
        return Verdict(strongest(tuple(hits)), tuple(hits), "".join(masked))
