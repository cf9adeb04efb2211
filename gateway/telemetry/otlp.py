"""OTLP/protobuf encoding of finished spans, written straight to bytes.

``encode_spans(items)`` is the serialized ``ExportTraceServiceRequest`` that the OTLP exporters'
``opentelemetry.exporter.otlp.proto.common.trace_encoder.encode_spans(spans)`` describes, with the same
grouping (resource, then instrumentation scope, in first-seen order) and the same field values. That
encoder builds a protobuf object per span and per attribute and hashes the resource (``json.dumps``)
per span; this one writes the wire format directly and caches what repeats across spans and batches:
the resource and scope fields (by object identity) and each scalar attribute's ``KeyValue``.

An item is an SDK ``ReadableSpan`` or an ``EncodedRequest``: the spans of a finished ``RequestTrace``,
encoded from its records by ``encode_request`` when the request ends, to the bytes the SDK encoder gives
for ``RequestTrace.readable_spans()``. Encoding then, rather than in the export thread, frees the
request's records at once: kept for the batch they would make the garbage collector run every few
dozen requests.

Wire format: https://protobuf.dev/programming-guides/encoding/ with the field numbers of
opentelemetry/proto/{collector/trace,trace,common,resource}/v1/*.proto. Fields at their default value
are omitted, as protobuf does, except where the SDK sets a message or a ``oneof`` member explicitly
(``Span.status``, ``ScopeSpans.scope``, ``ResourceSpans.resource``, ``KeyValue.value``, ``AnyValue``).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, NamedTuple, TypeVar

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes

from gateway.telemetry.request_trace import RequestTrace, SpanRecord

_T = TypeVar("_T")
_K = TypeVar("_K")
_logger = logging.getLogger(__name__)

_VARINT: Final = tuple(bytes((n,)) for n in range(128))
_FIXED64: Final = struct.Struct("<Q").pack
_DOUBLE: Final = struct.Struct("<d").pack
_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
_TWO_64: Final = 1 << 64
# Span.kind is the API's SpanKind shifted by one (0 is SPAN_KIND_UNSPECIFIED on the wire).
_KIND: Final = tuple(b"\x30" + _VARINT[kind.value + 1] for kind in sorted(SpanKind, key=lambda k: k.value))
# Span.flags (field 16) / Link.flags (field 6), fixed32: 0x100 says whether the context is remote is
# known, 0x200 that it is; indexed by is_remote.
_SPAN_FLAGS: Final = (b"\x85\x01\x00\x01\x00\x00", b"\x85\x01\x00\x03\x00\x00")
_LINK_FLAGS: Final = (b"\x35\x00\x01\x00\x00", b"\x35\x00\x03\x00\x00")
_NO_SCOPE: Final = (b"\x0a\x00", b"")  # the SDK sets an empty InstrumentationScope
_TIMES: Final = struct.Struct("<BQBQ").pack  # start_time_unix_nano and end_time_unix_nano, fixed64
_SPAN_TAGS: Final = tuple(b"\x12" + _VARINT[n] for n in range(128))  # ScopeSpans.spans, short ones
# Attribute values cached by value (see _attribute).
_CACHED_TYPES: Final = frozenset({str, bool, int, bytes})
_CACHE_MAX: Final = 4096
_CACHE_FIELD_MAX: Final = 512
_PARTS_CACHE_MAX: Final = 64

# Field tag -> (key, exact type, value) -> the whole KeyValue field. The type is in the key since True == 1 == 1.0.
_kv_cache: dict[bytes, dict[tuple[str, type, object], bytes]] = {}
_name_cache: dict[str, bytes] = {}
# By SpanKind value, then name: the name and kind fields of a span record.
_name_kind_cache: Final[tuple[dict[str, bytes], ...]] = tuple({} for _ in _KIND)
_lead_packers: dict[int, Callable[[bytes, int, bytes, int], bytes]] = {}
# (field tag, key) -> a double-valued KeyValue field up to its 8 value bytes (the same for every double).
_float_prefix: dict[tuple[bytes, str], bytes] = {}
# id(resource or scope) -> (the object, its (leading, trailing) fields). Both keep their attributes in
# an immutable BoundedAttributes, so the fields cannot go stale; holding the object keeps its id from
# being reused while the entry lives.
_parts_cache: dict[int, tuple[object, tuple[bytes, bytes]]] = {}


def _varint(n: int) -> bytes:
    if n < 128:
        return _VARINT[n]
    if n < 16384:  # most span lengths
        return bytes((n & 0x7F | 0x80, n >> 7))
    out = bytearray()
    while n > 127:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    return tag + _varint(len(payload)) + payload


def _int64(n: int) -> bytes:
    if not _INT64_MIN <= n <= _INT64_MAX:
        raise ValueError(f"Value out of range: {n}")
    return _varint(n + _TWO_64 if n < 0 else n)


def _utf8(text: object) -> bytes:
    """A string field's bytes; like protobuf, UTF-8 ``bytes`` are accepted too."""
    if isinstance(text, str):
        return text.encode()
    if isinstance(text, bytes):
        text.decode()
        return text
    raise TypeError(f"{text!r} has type {type(text).__name__}, but expected one of: bytes, str")


def _any(value: object) -> bytes:
    """AnyValue's payload, testing types in the SDK's order (bool before int, str and bytes before Sequence)."""
    exact = _ANY_BY_TYPE.get(type(value))
    if exact is not None:  # skips the isinstance chain, whose ABC checks cost more than the encoding
        return exact(value)
    if isinstance(value, str):  # None and bool cannot be subclassed: the table had them
        return _any_str(value)
    if isinstance(value, int):
        return _any_int(value)
    if isinstance(value, float):
        return _any_float(value)
    if isinstance(value, bytes):
        return _any_bytes(value)
    if isinstance(value, Sequence):
        return _any_array(value)
    if isinstance(value, Mapping):
        return _any_kvlist(value)
    raise TypeError(f"Invalid type {type(value)} of value {value}")


def _any_str(value: str) -> bytes:
    return _ld(b"\x0a", value.encode())


def _any_int(value: int) -> bytes:
    return b"\x18" + _int64(value)


def _any_float(value: float) -> bytes:
    return b"\x21" + _DOUBLE(value)


def _any_bytes(value: bytes) -> bytes:
    return _ld(b"\x3a", value)


def _any_array(value: Sequence[object]) -> bytes:
    return _ld(b"\x2a", b"".join([_ld(b"\x0a", _any(v)) for v in value]))


def _any_kvlist(value: Mapping[object, object]) -> bytes:
    return _ld(b"\x32", b"".join([_ld(b"\x0a", _kv(str(k), v)) for k, v in value.items()]))


# Exact types only: a subclass (IntEnum, a str subclass, ...) takes _any's isinstance chain.
_ANY_BY_TYPE: Final[dict[type, Callable[[Any], bytes]]] = {
    str: _any_str,
    bool: lambda value: b"\x10\x01" if value else b"\x10\x00",
    int: _any_int,
    float: _any_float,
    bytes: _any_bytes,
    tuple: _any_array,
    list: _any_array,
    dict: _any_kvlist,
    type(None): lambda _: b"",
}
# Span.status without a message, by StatusCode value.
_BARE_STATUS: Final = tuple(_ld(b"\x7a", b"\x18" + _VARINT[n] if n else b"") for n in range(len(StatusCode)))


def _kv(key: object, value: object) -> bytes:
    """KeyValue's payload; ``value`` is always present, as the SDK sets it even for None."""
    name = _utf8(key)
    return (_ld(b"\x0a", name) if name else b"") + _ld(b"\x12", _any(value))


def _kv_field(key: str, value: object) -> bytes | None:
    """Length-prefixed KeyValue, or None (logged) where the SDK would drop the attribute."""
    try:
        payload = _kv(key, value)
    except Exception as error:
        _logger.exception("Failed to encode key %s: %s", key, error)
        return None
    return _varint(len(payload)) + payload


def _attributes(tag: bytes, attributes: Attributes) -> bytes:
    """Each attribute as field ``tag``, from the cache where it has the field."""
    if not attributes:
        return b""
    cache = _kv_cache.get(tag)
    if cache is None:
        cache = _kv_cache[tag] = {}
    get = cache.get
    try:
        # One comprehension: a cache hit is a tuple and a lookup. Floats and other values never cached
        # (see _attribute) miss.
        return b"".join(
            [
                get((key, type(value), value)) or _attribute(cache, tag, key, value)
                for key, value in attributes.items()
            ]
        )
    except TypeError:  # a value that does not hash (a list): only scalars are looked up
        return b"".join(
            [
                (get((key, kind, value)) if (kind := type(value)) in _CACHED_TYPES else None)
                or _attribute(cache, tag, key, value)
                for key, value in attributes.items()
            ]
        )


def _attribute(cache: dict[tuple[str, type, object], bytes], tag: bytes, key: str, value: Any) -> bytes:
    """The field where ``cache`` (field ``tag``'s) did not have it; empty (logged) where the SDK would drop
    it. Scalars but floats are cached (a duration or a ratio rarely repeats), and sequences of strings (finish
    reasons), as tuples; not other sequences, since (1,) == (True,)."""
    kind = type(value)
    if kind is float:
        return _float_field(tag, key, value)
    cache_key: tuple[str, type, object] | None = None
    if kind in _CACHED_TYPES:
        cache_key = (key, kind, value)
    elif (kind is list or kind is tuple) and all(type(item) is str for item in value):
        cache_key = (key, kind, tuple(value))
        hit = cache.get(cache_key)
        if hit is not None:
            return hit
    field = _kv_field(key, value)
    if field is None:
        return b""
    field = tag + field
    if cache_key is not None:
        _remember(cache, cache_key, field)
    return field


def _float_field(tag: bytes, key: str, value: float) -> bytes:
    prefix = _float_prefix.get((tag, key))
    if prefix is None:
        field = _kv_field(key, value)
        if field is None:
            return b""
        prefix = tag + field[:-8]
        _remember(_float_prefix, (tag, key), prefix)
    return prefix + _DOUBLE(value)


def _add_attributes(out: list[bytes], tag: bytes, attributes: Attributes) -> None:
    if attributes:
        out.append(_attributes(tag, attributes))


def _remember(cache: dict[_K, bytes], key: _K, field: bytes) -> None:
    """Cache ``field`` unless it is long (the cache is bounded by count, so this bounds its bytes too)."""
    if len(field) <= _CACHE_FIELD_MAX:
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[key] = field


def _count(out: list[bytes], tag: bytes, n: int) -> None:
    if n:
        out.append(tag)
        out.append(_varint(n))


def _status(status: Status | None) -> bytes:
    """Span.status (field 15); the SDK always sets it, to an empty Status when UNSET."""
    if status is None:
        return b""
    # _value_ is a plain attribute, .value a descriptor call
    return _status_field(status.status_code._value_, status.description)


def _status_field(code: int, description: str | None) -> bytes:
    if not description:
        return _BARE_STATUS[code]
    return _ld(b"\x7a", _ld(b"\x12", description.encode()) + (b"\x18" + _varint(code) if code else b""))


def _name_field(name: str) -> bytes:
    field = _ld(b"\x2a", name.encode())
    _remember(_name_cache, name, field)
    return field


def _event(event: Event) -> bytes:
    return _event_fields(event.name, event.timestamp, event.attributes, event.dropped_attributes)


def _event_fields(name: str, timestamp: int, attributes: Attributes, dropped: int = 0) -> bytes:
    out: list[bytes] = []
    if timestamp:
        out += (b"\x09", _FIXED64(timestamp))
    if name:
        out.append(_ld(b"\x12", name.encode()))
    _add_attributes(out, b"\x1a", attributes)
    _count(out, b"\x20", dropped)
    return b"".join(out)


def _link(link: Link) -> bytes:
    ctx = link.context
    out = [b"\x0a\x10", ctx.trace_id.to_bytes(16, "big"), b"\x12\x08", ctx.span_id.to_bytes(8, "big")]
    _add_attributes(out, b"\x22", link.attributes)
    _count(out, b"\x28", link.dropped_attributes)
    out.append(_LINK_FLAGS[bool(ctx.is_remote)])
    return b"".join(out)


def _span(span: ReadableSpan) -> bytes:
    """The span as ScopeSpans.spans (field 2), tag and length included; fields in field-number order."""
    attributes, events, links = span.attributes, span.events, span.links
    ctx = span.context
    parent = span.parent
    name = span.name
    if ctx is None:
        raise ValueError(f"span {name!r} has no context")
    start, end = span.start_time, span.end_time
    out = [b"\x0a\x10", ctx.trace_id.to_bytes(16, "big"), b"\x12\x08", ctx.span_id.to_bytes(8, "big")]
    append = out.append
    if ctx.trace_state:
        append(_trace_state(ctx.trace_state))
    if parent:
        append(b"\x22\x08")
        append(parent.span_id.to_bytes(8, "big"))
    if name:
        append(_name_cache.get(name) or _name_field(name))
    append(_KIND[span.kind._value_])
    if start and end:
        append(_TIMES(0x39, start, 0x41, end))
    elif start or end:
        append(b"\x39" + _FIXED64(start) if start else b"\x41" + _FIXED64(end))
    _add_attributes(out, b"\x4a", attributes)
    _count(out, b"\x50", span.dropped_attributes)
    if events:
        out += [_ld(b"\x5a", _event(event)) for event in events]
    _count(out, b"\x60", span.dropped_events)
    if links:
        out += [_ld(b"\x6a", _link(link)) for link in links]
    _count(out, b"\x70", span.dropped_links)
    append(_status(span.status))
    append(_SPAN_FLAGS[bool(parent and parent.is_remote)])
    return _ld(b"\x12", b"".join(out))


def _trace_state(state: Mapping[str, str]) -> bytes:
    return _ld(b"\x1a", ",".join([f"{k}={v}" for k, v in state.items()]).encode())


_ERROR: Final = StatusCode.ERROR._value_


class EncodedRequest(NamedTuple):
    """A finished request's spans as consecutive ScopeSpans.spans fields, and where they belong."""

    resource: Resource
    scope: InstrumentationScope | None
    spans: bytes
    span_count: int


def encode_request(request: RequestTrace) -> EncodedRequest:
    """The request's spans, children in start order and the server span last, as ``readable_spans``."""
    spans, count = _request(request)
    return EncodedRequest(request.resource, request.scope or None, spans, count)


def _request(request: RequestTrace) -> tuple[bytes, int]:
    """The span records as consecutive ScopeSpans.spans fields (field 2), in ``readable_spans`` order, and
    their count. It runs for every request, so: one join per request (each span's length is summed from
    its parts), a child's leading fields in one ``struct`` call, and the server span (last, and the only
    one whose parent may be the caller's) after the loop."""
    head = b"\x0a\x10" + request.trace_id.to_bytes(16, "big")  # trace id, state, the span id's tag
    if request.trace_state:
        head += _trace_state(request.trace_state)
    head += b"\x12\x08"
    lead = _lead_packer(len(head))  # head, span_id, parent_span_id
    local = _SPAN_FLAGS[0]
    plain_tail = _BARE_STATUS[0] + local  # no events, status UNSET, flags: most spans
    fixed = len(head) + 18 + 18  # the leading fields and the two timestamps
    out: list[bytes] = []
    extend = out.extend
    names, times, attributes_of, tags = _name_kind_cache, _TIMES, _attributes, _SPAN_TAGS
    children = request.children
    for span in children:
        attributes = span.attributes
        attrs = attributes_of(b"\x4a", attributes) if attributes else b""
        kind = span.kind._value_
        name_kind = names[kind].get(span.name) or _name_kind(span.name, kind)
        tail = plain_tail if span.events is None and span.error is None else _tail(span, local)
        size = fixed + len(name_kind) + len(attrs) + len(tail)
        extend(
            (
                tags[size] if size < 128 else b"\x12" + _varint(size),
                lead(head, span.span_id, b"\x22\x08", span.parent_id),
                name_kind,
                times(0x39, span.start_time, 0x41, span.end_time),
                attrs,
                tail,
            )
        )
    server, caller = request.server, request.parent
    lead_fields = head + server.span_id.to_bytes(8, "big")
    if caller is not None:
        lead_fields += b"\x22\x08" + caller.span_id.to_bytes(8, "big")
    flags = local if caller is None else _SPAN_FLAGS[bool(caller.is_remote)]
    kind = server.kind._value_
    body = b"".join(
        (
            lead_fields,
            names[kind].get(server.name) or _name_kind(server.name, kind),
            times(0x39, server.start_time, 0x41, server.end_time),
            attributes_of(b"\x4a", server.attributes) if server.attributes else b"",
            _tail(server, flags),
        )
    )
    extend((b"\x12", _varint(len(body)), body))
    return b"".join(out), len(children) + 1


def _tail(span: SpanRecord, flags: bytes) -> bytes:
    """A span record's events (``(name, time, attributes)``), status and ``flags``."""
    events, error = span.events, span.error
    return b"".join(
        (
            b"".join([_ld(b"\x5a", _event_fields(*event)) for event in events]) if events else b"",
            _BARE_STATUS[0] if error is None else _status_field(_ERROR, error),
            flags,
        )
    )


def _lead_packer(head_size: int) -> Callable[[bytes, int, bytes, int], bytes]:
    """Packs a child's leading fields: ``head`` (trace id and state, the span id's tag) and its span and
    parent ids, big-endian as the SDK's ``to_bytes``; by ``head``'s size, which a trace state changes."""
    pack = _lead_packers.get(head_size)
    if pack is None:
        pack = struct.Struct(f">{head_size}sQ2sQ").pack
        if len(_lead_packers) >= _PARTS_CACHE_MAX:
            _lead_packers.clear()
        _lead_packers[head_size] = pack
    return pack


def _name_kind(name: str, kind: int) -> bytes:
    """Span.name and Span.kind, as one field pair cached by kind and name."""
    field = (_ld(b"\x2a", name.encode()) if name else b"") + _KIND[kind]
    _remember(_name_kind_cache[kind], name, field)
    return field


def _resource_parts(resource: Resource) -> tuple[bytes, bytes]:
    """ResourceSpans' ``resource`` (field 1) and ``schema_url`` (field 3)."""
    out: list[bytes] = []
    _add_attributes(out, b"\x0a", resource.attributes)
    schema = resource.schema_url
    return _ld(b"\x0a", b"".join(out)), _ld(b"\x1a", schema.encode()) if schema else b""


def _scope_parts(scope: InstrumentationScope) -> tuple[bytes, bytes]:
    """ScopeSpans' ``scope`` (field 1) and ``schema_url`` (field 3)."""
    out: list[bytes] = []
    if scope.name:
        out.append(_ld(b"\x0a", scope.name.encode()))
    if scope.version:
        out.append(_ld(b"\x12", scope.version.encode()))
    _add_attributes(out, b"\x1a", scope.attributes)
    schema = scope.schema_url
    return _ld(b"\x0a", b"".join(out)), _ld(b"\x1a", schema.encode()) if schema else b""


def _cached_parts(obj: _T, build: Callable[[_T], tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
    hit = _parts_cache.get(id(obj))
    if hit is not None and hit[0] is obj:
        return hit[1]
    parts = build(obj)
    if len(_parts_cache) >= _PARTS_CACHE_MAX:
        _parts_cache.clear()
    _parts_cache[id(obj)] = (obj, parts)
    return parts


# Resources in first-seen order, each with its scopes' spans; a list, not a dict keyed by Resource,
# since Resource.__hash__ is a json.dumps.
_Groups = list[tuple[Resource, dict[InstrumentationScope | None, list[bytes]]]]


def _same_key(a: Resource, b: Resource) -> bool:
    """Whether a dict holding key ``a`` would find ``b``: the SDK's encoder groups spans that way."""
    return a is b or (hash(a) == hash(b) and a == b)


def _bucket(groups: _Groups, resource: Resource, scope: InstrumentationScope | None) -> list[bytes]:
    """The span list (resource, scope) goes to, equal objects sharing one as in the SDK's dicts."""
    for known, scopes in groups:
        if _same_key(known, resource):
            return scopes.setdefault(scope, [])
    spans: list[bytes] = []
    groups.append((resource, {scope: spans}))
    return spans


def _assemble(groups: _Groups) -> bytes:
    out: list[bytes] = []
    for resource, scopes in groups:
        head, tail = _cached_parts(resource, _resource_parts)
        body = [head]
        for scope, spans in scopes.items():
            scope_head, scope_tail = _NO_SCOPE if scope is None else _cached_parts(scope, _scope_parts)
            size = len(scope_head) + sum(map(len, spans)) + len(scope_tail)
            body += (b"\x12", _varint(size), scope_head)
            body += spans
            body.append(scope_tail)
        body.append(tail)
        out += (b"\x0a", _varint(sum(map(len, body))))
        out += body
    return b"".join(out)


def encode_spans(items: Sequence[ReadableSpan | EncodedRequest]) -> bytes:
    """The serialized ExportTraceServiceRequest for ``items``, grouped as the SDK's encoder groups spans."""
    groups: _Groups = []
    by_ids: dict[tuple[int, int], list[bytes]] = {}
    for item in items:
        if isinstance(item, EncodedRequest):
            resource, scope, spans = item.resource, item.scope, item.spans
        else:
            resource, scope, spans = item.resource, item.instrumentation_scope or None, _span(item)
        ids = (id(resource), id(scope))
        bucket = by_ids.get(ids)
        if bucket is None:
            bucket = by_ids[ids] = _bucket(groups, resource, scope)
        bucket.append(spans)
    return _assemble(groups)


def span_count(items: Sequence[ReadableSpan | EncodedRequest]) -> int:
    """How many spans ``items`` hold."""
    return sum(item.span_count if isinstance(item, EncodedRequest) else 1 for item in items)


__all__ = ["EncodedRequest", "encode_request", "encode_spans", "span_count"]
