"""YAML parsing that keeps line numbers, so a validation error can name the line it is about.

The document is composed into nodes first (they carry marks), indexed as ``path -> line``, and only
then constructed into plain Python data for pydantic. Aliases are refused: policy files stay flat
and readable, and a reference bomb can never reach the validator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import yaml

from gateway.policy.problems import PolicyError

Loc = tuple[str | int, ...]


class _NoAliasLoader(yaml.SafeLoader):
    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            message = "aliases (*name) are not allowed in policy files"
            raise yaml.composer.ComposerError(None, None, message, mark)
        return super().compose_node(parent, index)


@dataclass(frozen=True, slots=True)
class LineIndex:
    """Maps a location in the data (keys and list indices) to the line of its YAML node."""

    lines: dict[Loc, int]
    root_line: int = 1

    def line_of(self, loc: Sequence[str | int]) -> int:
        """Line of the deepest known prefix of ``loc``.

        Elements that are not in the document are skipped rather than ending the walk: pydantic
        puts union tags (``'pattern'``) and key markers (``'[key]'``) into its error locations.
        """
        path: Loc = ()
        line = self.root_line
        for element in loc:
            for candidate in (element, str(element)):
                found = self.lines.get((*path, candidate))
                if found is not None:
                    path = (*path, candidate)
                    line = found
                    break
        return line


@dataclass(frozen=True, slots=True)
class ParsedYaml:
    data: object
    index: LineIndex


def parse_yaml(text: str, file: str) -> ParsedYaml | list[PolicyError]:
    """Parse one YAML document; return the data and its line index, or every problem found."""
    try:
        loader = _NoAliasLoader(text)
    except yaml.YAMLError as exc:  # the reader rejects control characters before parsing
        return [PolicyError(file, _reader_line(exc, text), f"invalid YAML: {_first_line(exc)}")]
    try:
        node = loader.get_single_node()
        if node is None:
            return ParsedYaml(None, LineIndex({}))
        lines: dict[Loc, int] = {}
        errors: list[PolicyError] = []
        _index(node, (), lines, errors, file)
        if errors:
            return errors
        data = loader.construct_document(node)
        return ParsedYaml(data, LineIndex(lines, node.start_mark.line + 1))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        detail = "; ".join(p for p in (exc.context, exc.problem) if p)
        return [PolicyError(file, line, f"invalid YAML: {detail}")]
    except yaml.YAMLError as exc:  # reader errors carry a position, not a mark
        return [PolicyError(file, _reader_line(exc, text), f"invalid YAML: {_first_line(exc)}")]
    finally:
        loader.dispose()


def _index(node: yaml.Node, path: Loc, lines: dict[Loc, int], errors: list[PolicyError], file: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                errors.append(PolicyError(file, line, f"duplicate key {key!r} (first at line {seen[key]})"))
                continue
            seen[key] = line
            lines[(*path, key)] = line
            _index(value_node, (*path, key), lines, errors, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            _index(item, (*path, i), lines, errors, file)


def _reader_line(exc: yaml.YAMLError, text: str) -> int:
    position = getattr(exc, "position", None)
    if isinstance(position, int):
        return text.count("\n", 0, position) + 1
    return 1


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


__all__ = ["LineIndex", "Loc", "ParsedYaml", "parse_yaml"]
