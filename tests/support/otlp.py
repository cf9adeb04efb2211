"""OTLP/HTTP and OTLP/gRPC collector stand-ins for tests: they decode ExportTraceServiceRequest with opentelemetry-proto."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan


class Received:
    """Export requests as a collector got them, with their (lower-case) headers or gRPC metadata."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.headers: list[dict[str, str]] = []
        self.arrived = threading.Event()

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest, headers: dict[str, str]) -> None:
        self.requests.append(request)
        self.headers.append(headers)
        self.arrived.set()

    def all_spans(self) -> list[ProtoSpan]:
        return [
            span
            for req in self.requests
            for rs in req.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]

    def spans(self) -> dict[str, tuple[ProtoSpan, dict[str, Any]]]:
        """Spans by name, with their resource attributes."""
        out: dict[str, tuple[ProtoSpan, dict[str, Any]]] = {}
        for req in self.requests:
            for rs in req.resource_spans:
                resource = kv_dict(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        out[span.name] = (span, resource)
        return out


def kv_dict(kvs: Any) -> dict[str, Any]:
    """OTLP key-values as a dict (arrays as lists)."""
    out: dict[str, Any] = {}
    kv: KeyValue
    for kv in kvs:
        value = kv.value
        kind = value.WhichOneof("value")
        if kind == "array_value":
            out[kv.key] = [getattr(v, v.WhichOneof("value")) for v in value.array_value.values]
        else:
            out[kv.key] = getattr(value, kind) if kind else None
    return out


@contextmanager
def otlp_http_receiver(status: int = 200) -> Iterator[tuple[str, Received]]:
    """A receiver on a free loopback port: its base URL (exporters append ``/v1/traces``) and what it got.

    It answers ``status`` on /v1/traces (the request is recorded either way) and 404 elsewhere.
    """
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            request = trace_service_pb2.ExportTraceServiceRequest()
            request.ParseFromString(body)
            received.add(request, {k.lower(): v for k, v in self.headers.items()})
            reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(status if self.path == "/v1/traces" else 404)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="otlp-receiver")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def otlp_grpc_receiver(fail: grpc.StatusCode | None = None) -> Iterator[tuple[str, Received]]:
    """A TraceService on a free loopback port: its ``http://`` endpoint and what it got (with metadata).

    With ``fail``, every call is recorded and then aborted with that status code.
    """
    received = Received()

    class Servicer(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> trace_service_pb2.ExportTraceServiceResponse:
            received.add(request, {k: v for k, v in context.invocation_metadata()})
            if fail is not None:
                context.abort(fail, "the test receiver fails on purpose")
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Servicer(), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        server.stop(grace=None).wait(5)


__all__ = ["Received", "kv_dict", "otlp_grpc_receiver", "otlp_http_receiver"]
