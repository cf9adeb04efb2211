"""Load a bundle directory into a validated `PolicyBundle`, reporting every problem at once.

Layout: ``DIR/{clients,limits,guardrails,loops,generation,audit}.yaml`` (each optional; the file's top
level is the section's content) and ``DIR/lists/NAME.txt`` word lists. Hidden files (editor swap and
lock files, Kubernetes ``..data`` links) are not bundle files. Golden cases in ``DIR/tests/`` are not
part of the policy and do not change its version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic

from gateway.policy.checks import Located, cross_check
from gateway.policy.problems import PolicyError, PolicyLoadError
from gateway.policy.sections import (
    AuditSection,
    ClientsSection,
    GenerationSection,
    GuardrailsSection,
    LimitsSection,
    LoopsSection,
    PolicyBundle,
)
from gateway.policy.words import parse_word_list
from gateway.policy.yamlsource import LineIndex, parse_yaml

SECTIONS: dict[str, type[pydantic.BaseModel]] = {
    "clients": ClientsSection,
    "limits": LimitsSection,
    "guardrails": GuardrailsSection,
    "loops": LoopsSection,
    "generation": GenerationSection,
    "audit": AuditSection,
}
SECTION_FILES: tuple[str, ...] = tuple(f"{name}.yaml" for name in SECTIONS)
LISTS_DIR = "lists"
MAX_FILE_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class LoadedBundle:
    """A bundle that passed every check, with the content hash of the files it was built from."""

    bundle: PolicyBundle
    version: str
    files: tuple[str, ...]


def read_bundle_files(root: Path) -> tuple[dict[str, bytes], list[PolicyError]]:
    """The bundle's files as ``relative path -> bytes``, plus problems reading or naming them."""
    files: dict[str, bytes] = {}
    errors: list[PolicyError] = []
    if not root.is_dir():
        return files, [PolicyError(str(root), 1, "policy directory not found")]
    for path in sorted(root.iterdir()):
        name = path.name
        if name.startswith(".") or path.is_dir() or path.suffix not in (".yaml", ".yml"):
            continue
        if name not in SECTION_FILES:
            expected = ", ".join(SECTION_FILES)
            errors.append(PolicyError(name, 1, f"unknown policy file (expected one of: {expected})"))
            continue
        _read(path, name, files, errors)
    lists = root / LISTS_DIR
    if lists.is_dir():
        for path in sorted(lists.iterdir()):
            if not path.name.startswith(".") and path.suffix == ".txt" and not path.is_dir():
                _read(path, f"{LISTS_DIR}/{path.name}", files, errors)
    return files, errors


def _read(path: Path, rel: str, files: dict[str, bytes], errors: list[PolicyError]) -> None:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            errors.append(PolicyError(rel, 1, f"file too large ({size} bytes, limit {MAX_FILE_BYTES})"))
            return
        files[rel] = path.read_bytes()
    except OSError as exc:
        errors.append(PolicyError(rel, 1, f"cannot read file: {exc.strerror or type(exc).__name__}"))


def bundle_version(files: Mapping[str, bytes]) -> str:
    """sha256 over the sorted (relative path, bytes) pairs, each length-prefixed so no two bundles collide."""
    digest = hashlib.sha256()
    for rel in sorted(files):
        name = rel.encode()
        data = files[rel]
        digest.update(len(name).to_bytes(8, "big") + name + len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def validate_files(
    files: Mapping[str, bytes], *, required: Collection[str] = ()
) -> LoadedBundle | list[PolicyError]:
    """Validate bundle contents; ``required`` names section files that must be present (see PolicyStore)."""
    errors: list[PolicyError] = []
    if not any(rel in files for rel in SECTION_FILES):
        errors.append(
            PolicyError(".", 1, f"no policy files found (expected any of: {', '.join(SECTION_FILES)})")
        )
    for rel in sorted(set(required) - set(files)):
        errors.append(
            PolicyError(rel, 1, "file was removed; to reset a section to its defaults, leave the file empty")
        )

    texts: dict[str, str] = {}
    for rel, data in files.items():
        text = _decode(rel, data, errors)
        if text is not None:
            texts[rel] = text

    word_lists: dict[str, tuple[str, ...]] = {}
    for rel in sorted(texts):
        if rel.startswith(f"{LISTS_DIR}/"):
            entries, list_errors = parse_word_list(texts[rel], rel)
            errors += list_errors
            word_lists[rel[len(LISTS_DIR) + 1 : -len(".txt")]] = entries

    sections: dict[str, Any] = {}
    sources: dict[str, Located] = {}
    valid: set[str] = set()
    for name, model in SECTIONS.items():
        rel = f"{name}.yaml"
        sources[name] = Located(rel, LineIndex({}))
        if rel not in files:
            valid.add(name)
            continue
        if rel not in texts:
            continue
        section = _section(model, texts[rel], rel, errors, sources)
        if section is not None:
            sections[name] = section
            valid.add(name)

    bundle = PolicyBundle(**sections, word_lists=word_lists)
    errors += cross_check(bundle, sources, frozenset(valid))
    if errors:
        return sorted(set(errors))
    return LoadedBundle(bundle, bundle_version(files), tuple(sorted(files)))


def _section(
    model: type[pydantic.BaseModel],
    text: str,
    rel: str,
    errors: list[PolicyError],
    sources: dict[str, Located],
) -> pydantic.BaseModel | None:
    parsed = parse_yaml(text, rel)
    if isinstance(parsed, list):
        errors += parsed
        return None
    data = {} if parsed.data is None else parsed.data
    sources[rel.removesuffix(".yaml")] = Located(rel, parsed.index)
    if not isinstance(data, dict):
        errors.append(PolicyError(rel, parsed.index.root_line, "top level must be a mapping of settings"))
        return None
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        for item in exc.errors(include_url=False, include_input=False):
            loc = tuple(item["loc"])
            where = _dotted(loc)
            message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
            errors.append(
                PolicyError(rel, parsed.index.line_of(loc), f"{where}: {message}" if where else message)
            )
        return None


def _dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _decode(rel: str, data: bytes, errors: list[PolicyError]) -> str | None:
    try:
        # utf-8-sig: a BOM written by some editors is not part of the first key or word
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        errors.append(PolicyError(rel, line, f"not valid UTF-8 (byte offset {exc.start})"))
        return None


def load_bundle(root: Path, *, required: Collection[str] = ()) -> LoadedBundle:
    """Read and validate ``root``; raise `PolicyLoadError` with every problem found."""
    files, errors = read_bundle_files(root)
    if not root.is_dir():
        raise PolicyLoadError(errors)
    result = validate_files(files, required=required)
    if isinstance(result, list):
        raise PolicyLoadError([*errors, *result])
    if errors:
        raise PolicyLoadError(errors)
    return result


__all__ = [
    "LISTS_DIR",
    "SECTIONS",
    "SECTION_FILES",
    "LoadedBundle",
    "bundle_version",
    "load_bundle",
    "read_bundle_files",
    "validate_files",
]
