"""Validate every Kubernetes object under deploy/k8s against the Kubernetes schemas.

Run by `make deploy-check` in the deploy venv (kubernetes-validate ships the schemas). kustomize is not
installed, so nothing is rendered: each file a kustomization lists under ``resources`` is validated as
it stands (overlays add whole objects; their only changes to the base are configMapGenerator merges).
Every YAML file must be a kustomization, a listed resource or a generator input; anything else fails,
so a manifest cannot sit unchecked. Kinds without a schema in kubernetes-validate are skipped by name,
with the reason, never silently.
"""

from __future__ import annotations

import sys
from pathlib import Path

import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.33"
# Custom resources: their schemas come with their CRDs, not with Kubernetes.
SKIPPED_KINDS = {
    "InferencePool": "CRD of the Gateway API Inference Extension (inference.networking.k8s.io/v1)",
}


def kustomization_inputs(root: Path) -> tuple[set[Path], set[Path], list[str]]:
    """Resource files and generator inputs named by every kustomization under ``root``, plus problems."""
    resources: set[Path] = set()
    inputs: set[Path] = set()
    problems: list[str] = []
    for kfile in sorted(root.rglob("kustomization.yaml")):
        doc = yaml.safe_load(kfile.read_text(encoding="utf-8")) or {}
        for entry in doc.get("resources", []):
            target = (kfile.parent / entry).resolve()
            if not target.exists():
                problems.append(f"{kfile}: resource {entry} does not exist")
            elif target.is_file():
                resources.add(target)
        for generator in doc.get("configMapGenerator", []) + doc.get("secretGenerator", []):
            for entry in generator.get("files", []):
                target = (kfile.parent / entry.split("=", 1)[-1]).resolve()
                if not target.is_file():
                    problems.append(f"{kfile}: generator file {entry} does not exist")
                inputs.add(target)
    return resources, inputs, problems


def validate_file(path: Path) -> tuple[int, list[str]]:
    """(objects validated, problems) for one resource file."""
    checked = 0
    problems: list[str] = []
    for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        if not doc:
            continue
        kind = doc.get("kind", "?")
        name = doc.get("metadata", {}).get("name", "?")
        if kind in SKIPPED_KINDS:
            print(f"SKIP {path}: {kind}/{name}: {SKIPPED_KINDS[kind]}")
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            problems.append(f"{path}: {kind}/{name}: {where}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{path}: {kind}/{name}: {exc.message} (add it to SKIPPED_KINDS with a reason)")
        else:
            checked += 1
    return checked, problems


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else "deploy/k8s").resolve()
    resources, inputs, problems = kustomization_inputs(root)
    checked = 0
    for path in sorted(root.rglob("*.yaml")):
        if path.name == "kustomization.yaml" or path in inputs:
            continue
        if path not in resources:
            problems.append(f"{path}: not listed by any kustomization (resource or generator input)")
            continue
        count, found = validate_file(path)
        checked += count
        problems += found
    for problem in problems:
        print(f"ERROR {problem}")
    print(f"{checked} objects valid against Kubernetes {KUBERNETES_VERSION}, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
