"""The Kubernetes manifests under deploy/k8s: well-formed, complete, and the gateway's security posture.

Schema validation and security scanning of every object are `make deploy-check`'s job (kubernetes-validate,
checkov); these tests check what those tools cannot know: that kustomizations point at files that exist,
that the policy ConfigMap carries the whole bundle into the right paths, and that the gateway's pod is
set up the way Menshen needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.policy.loader import read_bundle_files
from gateway.ratelimit import RateLimitConfig
from gateway.settings import OPTIONS, load_settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
POLICIES = REPO / "policies"
OVERLAYS = ("single-engine", "llm-d")


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def kustomizations() -> list[Path]:
    return [*sorted(K8S.rglob("kustomization.yaml")), POLICIES / "kustomization.yaml"]


def find(kind: str, name: str) -> dict[str, Any]:
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in load_docs(path):
            if doc.get("kind") == kind and doc.get("metadata", {}).get("name") == name:
                return doc
    raise AssertionError(f"no {kind}/{name} under {K8S}")


def generator_literals(kustomization: Path, name: str) -> dict[str, str]:
    doc = load_docs(kustomization)[0]
    for generator in doc.get("configMapGenerator", []):
        if generator["name"] == name:
            return dict(literal.split("=", 1) for literal in generator.get("literals", []))
    return {}


def gateway_env(overlay: str) -> dict[str, str]:
    """The gateway's environment as kustomize builds it: base literals, overlay merges, then env:."""
    env = generator_literals(K8S / "base" / "kustomization.yaml", "menshen-env")
    env.update(generator_literals(K8S / "overlays" / overlay / "kustomization.yaml", "menshen-env"))
    for var in gateway_container()["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
    return env


def gateway_container() -> dict[str, Any]:
    containers = find("Deployment", "menshen")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def test_every_yaml_file_parses() -> None:
    files = sorted(K8S.rglob("*.yaml"))
    assert len(files) > 10
    for path in files:
        assert load_docs(path), f"{path} is empty"


@pytest.mark.parametrize("kustomization", kustomizations(), ids=lambda p: str(p.parent.relative_to(REPO)))
def test_kustomization_entries_exist(kustomization: Path) -> None:
    doc = load_docs(kustomization)[0]
    here = kustomization.parent
    for entry in doc.get("resources", []):
        target = here / entry
        assert target.exists(), f"{kustomization}: resource {entry} missing"
        if target.is_dir():
            assert (target / "kustomization.yaml").is_file(), f"{entry} is a directory without kustomization"
    for patch in doc.get("patches", []):
        if "path" in patch:
            assert (here / patch["path"]).is_file(), f"{kustomization}: patch {patch['path']} missing"
    for entry in doc.get("patchesStrategicMerge", []):
        assert (here / entry).is_file(), f"{kustomization}: patch {entry} missing"
    for generator in doc.get("configMapGenerator", []) + doc.get("secretGenerator", []):
        for entry in generator.get("files", []):
            source = entry.split("=", 1)[-1]
            assert (here / source).is_file(), f"{kustomization}: generator file {source} missing"


def test_overlays_build_on_the_base() -> None:
    for overlay in OVERLAYS:
        doc = load_docs(K8S / "overlays" / overlay / "kustomization.yaml")[0]
        assert "../../base" in doc["resources"]
        assert gateway_env(overlay)["GATEWAY_UPSTREAM"].startswith("http://")


def test_policy_configmap_carries_the_whole_bundle_to_its_paths() -> None:
    """Every bundle file is a ConfigMap key, and the volume maps each key back to the loader's path."""
    bundle, errors = read_bundle_files(POLICIES / "default")
    assert not errors
    policy = load_docs(POLICIES / "kustomization.yaml")[0]["configMapGenerator"][0]
    assert policy["name"] == "menshen-policy"
    # Updated in place so that the gateway's watcher reloads it (a renamed ConfigMap would roll the pods).
    assert policy["options"]["disableNameSuffixHash"] is True
    key_to_source: dict[str, str] = {}
    for entry in policy["files"]:
        key, _, source = entry.rpartition("=")
        key_to_source[key or Path(source).name] = str(Path(source).relative_to("default"))
    volumes = find("Deployment", "menshen")["spec"]["template"]["spec"]["volumes"]
    items = next(v for v in volumes if v["name"] == "policy")["configMap"]["items"]
    key_to_path = {item["key"]: item["path"] for item in items}
    assert key_to_path == key_to_source
    assert sorted(key_to_path.values()) == sorted(bundle)


def test_policy_is_mounted_as_a_directory_where_the_gateway_reads_it() -> None:
    """subPath mounts never see ConfigMap updates; a directory mount gets the kubelet's swap."""
    mounts = {m["name"]: m for m in gateway_container()["volumeMounts"]}
    assert "subPath" not in mounts["policy"]
    assert mounts["policy"]["mountPath"] == gateway_env("llm-d")["GATEWAY_POLICIES"]


def test_gateway_security_posture() -> None:
    pod = find("Deployment", "menshen")["spec"]["template"]["spec"]
    container = gateway_container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    assert find("ServiceAccount", pod["serviceAccountName"])["automountServiceAccountToken"] is False
    ctx = container["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"]["drop"] == ["ALL"]
    assert "add" not in ctx["capabilities"]
    # Everything the gateway writes lands on an emptyDir, since the root filesystem is read-only.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    env = gateway_env("llm-d")
    for writable in (env["GATEWAY_DATA_DIR"], "/tmp", env["HOME"]):
        assert mounts.get(writable) in empty_dirs, writable


def test_gateway_probes() -> None:
    container = gateway_container()
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[container["readinessProbe"]["httpGet"]["port"]] == int(gateway_env("llm-d")["GATEWAY_PORT"])


def test_gateway_resources_are_bounded() -> None:
    resources = gateway_container()["resources"]
    for key in ("cpu", "memory"):
        assert resources["requests"][key]
        assert resources["limits"][key]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_listens_on_the_pod_and_authenticates(overlay: str) -> None:
    env = gateway_env(overlay)
    assert env["GATEWAY_HOST"] == "0.0.0.0"
    modes = {mode.strip() for mode in env["GATEWAY_AUTH"].split(",")}
    assert modes and "none" not in modes


def test_gateway_settings_names_exist() -> None:
    """A renamed setting must not leave the manifests setting a variable nobody reads."""
    names = set(generator_literals(K8S / "base" / "kustomization.yaml", "menshen-env"))
    names |= {var["name"] for var in gateway_container()["env"]}
    for overlay in OVERLAYS:
        names |= set(generator_literals(K8S / "overlays" / overlay / "kustomization.yaml", "menshen-env"))
    known = {opt.env for opt in OPTIONS}
    unknown = {name for name in names if name.startswith("GATEWAY_") and name not in known}
    assert not unknown


def _pod_paths_here(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The settings with the files a pod mounts pointed at stand-ins on this machine."""
    local = {k: v for k, v in env.items() if k.startswith("GATEWAY_")}
    local["GATEWAY_POLICIES"] = str(POLICIES / "default")
    local["GATEWAY_DATA_DIR"] = str(tmp_path)
    for name in ("GATEWAY_UPSTREAM_API_KEY_FILE", "GATEWAY_METRICS_TOKEN_FILE"):
        if name in local:
            stand_in = tmp_path / name.lower()
            stand_in.write_text("x")
            local[name] = str(stand_in)
    return local


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_settings_of_each_overlay_are_accepted(overlay: str, tmp_path: Path) -> None:
    """The gateway would start with them: no problem from the one settings check (issuer URL, auth...)."""
    env = {**gateway_env(overlay), "GATEWAY_UPSTREAM": "http://engine:8000"}
    load_settings(environ=_pod_paths_here(env, tmp_path))


def test_systemd_environment_example_is_accepted(tmp_path: Path) -> None:
    lines = (REPO / "deploy" / "systemd" / "menshen.env.example").read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    load_settings(environ=_pod_paths_here(env, tmp_path))


def test_redis_url_placeholder_uses_an_accepted_scheme() -> None:
    url = find("Secret", "menshen-redis")["stringData"]["url"]
    assert RateLimitConfig(redis_url=url).redis_url == url


def test_llm_d_upstream_is_the_pools_endpoint_picker() -> None:
    pool = find("InferencePool", "qwen3-8b")
    assert pool["apiVersion"] == "inference.networking.k8s.io/v1"
    epp = pool["spec"]["endpointPickerRef"]["name"]
    service = find("Service", epp)
    upstream = gateway_env("llm-d")["GATEWAY_UPSTREAM"]
    assert upstream.startswith(f"http://{epp}.")
    port = int(upstream.rsplit(":", 1)[1])
    assert port in {p["port"] for p in service["spec"]["ports"]}
    assert pool["spec"]["endpointPickerRef"]["port"]["number"] in {
        p["port"] for p in service["spec"]["ports"]
    }
    engine = find("Deployment", "vllm-qwen3-8b")
    assert (
        pool["spec"]["selector"]["matchLabels"].items()
        <= engine["spec"]["template"]["metadata"]["labels"].items()
    )


def test_engine_runs_qwen3_with_reasoning_and_tool_parsers() -> None:
    container = find("Deployment", "vllm-qwen3-8b")["spec"]["template"]["spec"]["containers"][0]
    args = set(container["args"])
    assert {"--reasoning-parser=qwen3", "--enable-auto-tool-choice", "--tool-call-parser=hermes"} <= args
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
