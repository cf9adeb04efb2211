"""Structured logs: JSON lines for machines, readable lines on a terminal; trace ids; scrubbed.

structlog renders through a stdlib ``ProcessorFormatter`` on the root logger, so records from
third-party loggers (uvicorn, httpx, litestar) take the same path: same fields, same scrubber.
``configure_logging`` changes the process-wide logging set-up; nothing happens at import.
"""

from __future__ import annotations

import json as _json
import logging
import sys
from collections.abc import MutableMapping
from typing import IO, Any, Final

import structlog

from gateway.telemetry.scrub import Scrubber
from gateway.telemetry.spans import current_ids

ACCESS_LOGGER: Final = "menshen.access"
# Loggers that install their own handlers; they must propagate to ours instead.
_THIRD_PARTY: Final[tuple[str, ...]] = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "httpx",
    "httpcore",
    "litestar",
)
_HANDLER_NAME: Final = "menshen"


def add_trace_ids(logger: object, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Add ``trace_id`` / ``span_id`` (W3C hex) of the current span, when there is one."""
    ids = current_ids()
    if ids is not None:
        event_dict.setdefault("trace_id", format(ids[0], "032x"))
        event_dict.setdefault("span_id", format(ids[1], "016x"))
    return event_dict


def _drop_color_message(
    logger: object, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Drop uvicorn's ``color_message`` extra: the same text again, with ANSI escapes."""
    event_dict.pop("color_message", None)
    return event_dict


def configure_logging(
    level: str = "INFO",
    json: bool | None = None,
    *,
    stream: IO[str] | None = None,
    scrubber: Scrubber | None = None,
) -> None:
    """Route structlog and stdlib logging to one handler on ``stream`` (default stderr).

    ``json=None`` picks by the stream: human-readable lines on a terminal (coloured), one JSON object
    per line otherwise. The scrubber runs before either renderer. Idempotent: a second call replaces
    the handler installed by the first. Run uvicorn with ``log_config=None`` so that it does not
    install its own handlers afterwards.
    """
    out = stream if stream is not None else sys.stderr
    tty = _is_terminal(out)
    as_json = not tty if json is None else json
    scrub = scrubber or Scrubber()
    # A terminal reader wants the wall-clock time of day; machines want the full UTC instant.
    stamp = (
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="time")
        if as_json
        else structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False, key="time")
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        stamp,
        add_trace_ids,
    ]
    renderer: Any = structlog.processors.JSONRenderer(serializer=_dumps) if as_json else _console(tty)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _drop_color_message,
            structlog.processors.format_exc_info,
            # Last before rendering, so exception text and extras are scrubbed too.
            scrub,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _THIRD_PARTY:
        lib = logging.getLogger(name)
        lib.handlers.clear()
        lib.propagate = True
    # httpx logs every request URL at INFO; keep it at WARNING unless debugging.
    if logging.getLevelName(level.upper()) != logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


def log_access(
    *,
    method: str,
    path: str,
    status: int,
    duration_ms: float,
    client_id: str | None = None,
    bytes_sent: int | None = None,
    finish_reason: str | None = None,
    trace_id: str | None = None,
    route: str | None = None,
) -> None:
    """One access-log line per request. ``path`` is logged without its query string."""
    fields: dict[str, Any] = {
        "method": method,
        "path": path.split("?", 1)[0],
        "status": status,
        "duration_ms": round(duration_ms, 3),
        "client_id": client_id,
        "bytes": bytes_sent,
        "finish_reason": finish_reason,
    }
    if route is not None:
        fields["route"] = route
    if trace_id is not None:
        fields["trace_id"] = trace_id
    get_logger(ACCESS_LOGGER).info("access", **fields)


def _console(colors: bool) -> structlog.dev.ConsoleRenderer:
    """``12:00:00 [info     ] [logger] event  key=value``: the logger before the event, so that an
    event of several lines (the end of the engine's log) ends with its own last line."""
    console = structlog.dev.ConsoleRenderer(colors=colors, timestamp_key="time", pad_event_to=40)
    names = ("logger", "logger_name")
    columns = console.columns
    named = [c for c in columns if c.key in names]
    rest = [c for c in columns if c.key not in names]
    event = next(i for i, c in enumerate(rest) if c.key == "event")
    console.columns = [*rest[:event], *named, *rest[event:]]
    return console


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a stand-in without isatty, or a closed stream
        return False


def _dumps(obj: Any, **kw: Any) -> str:
    return _json.dumps(obj, default=str, ensure_ascii=False, separators=(",", ":"))


__all__ = [
    "ACCESS_LOGGER",
    "add_trace_ids",
    "configure_logging",
    "get_logger",
    "log_access",
]
