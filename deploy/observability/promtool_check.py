"""Check the alert rules with promtool: syntax of both copies and of the dashboard's queries, then the unit
tests in alerts.test.yaml.

Run by ``make obs-check`` (not part of ``make test``: promtool is not a Python package). promtool compares
annotations verbatim, so the unit tests run against a copy of the rules without them: the cases pin when
an alert fires and with which labels; the test suite checks the annotations themselves.

    PROMTOOL=/path/to/promtool python deploy/observability/promtool_check.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
# Grafana's variables, replaced by values Prometheus parses.
_DASHBOARD_VARIABLES = {"$__rate_interval": "5m", "$job": ".*", "$instance": ".*"}


def _without_annotations(rules: dict[str, Any]) -> dict[str, Any]:
    groups = [
        {**group, "rules": [{k: v for k, v in rule.items() if k != "annotations"} for rule in group["rules"]]}
        for group in rules["groups"]
    ]
    return {"groups": groups}


def _dashboard_queries() -> dict[str, Any]:
    """The dashboard's queries as recording rules, so that promtool parses each one."""
    dashboard = json.loads((HERE / "grafana-dashboard.json").read_text(encoding="utf-8"))
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    rules = []
    for n, expr in enumerate(exprs):
        for variable, value in _DASHBOARD_VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:query_{n}", "expr": expr})
    return {"groups": [{"name": "dashboard", "rules": rules}]}


def main() -> int:
    promtool = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if promtool is None:
        print("promtool not found: install Debian's `prometheus` package or set PROMTOOL", file=sys.stderr)
        return 2
    operator = yaml.safe_load((HERE / "prometheusrule.yaml").read_text(encoding="utf-8"))
    rules = yaml.safe_load((HERE / "alerts.yaml").read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # The Operator's copy is a custom resource; promtool checks its `spec` as a plain rules file.
        (work / "prometheusrule-spec.yaml").write_text(yaml.safe_dump(operator["spec"]), encoding="utf-8")
        (work / "dashboard-queries.yaml").write_text(yaml.safe_dump(_dashboard_queries()), encoding="utf-8")
        (work / "alerts.yaml").write_text(yaml.safe_dump(_without_annotations(rules)), encoding="utf-8")
        shutil.copy(HERE / "alerts.test.yaml", work / "alerts.test.yaml")
        checked = ("prometheusrule-spec.yaml", "dashboard-queries.yaml")
        for command in (
            [promtool, "check", "rules", str(HERE / "alerts.yaml"), *(str(work / f) for f in checked)],
            [promtool, "test", "rules", str(work / "alerts.test.yaml")],
        ):
            # The operator's own promtool with fixed arguments: nothing here comes from untrusted input.
            if subprocess.run(command, check=False).returncode != 0:  # noqa: S603
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
