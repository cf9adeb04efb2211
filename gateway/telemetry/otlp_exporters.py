"""The stock OTLP span exporters with ``gateway.telemetry.otlp.encode_spans`` as their encoder, and the
batch processor that queues whole requests for them.

Constructors, environment variables, retries, metrics and results are the parents'; only the encoding
changes, and the batches they export may hold ``EncodedRequest``s besides ``ReadableSpan``s.
This module imports both the HTTP and the gRPC exporter: import it when tracing is set up.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcOTLPSpanExporter
from opentelemetry.exporter.otlp.proto.http._common import (
    RequestPayloadTooLargeError,
    _is_request_too_large,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpOTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE

from gateway.telemetry.otlp import EncodedRequest, encode_request, encode_spans, span_count
from gateway.telemetry.request_trace import RequestSpanProcessor, RequestTrace

Item = ReadableSpan | EncodedRequest

_logger = logging.getLogger(__name__)


class HttpSpanExporter(HttpOTLPSpanExporter):
    """OTLP/HTTP (protobuf): the parent's ``export`` step by step, with our encoder."""

    def export(self, spans: Sequence[Item]) -> SpanExportResult:
        if self._shutdown:
            _logger.warning("Exporter already shutdown, ignoring batch")
            return SpanExportResult.FAILURE
        with self._metrics.export_operation(span_count(spans)) as result:
            try:
                body = encode_spans(spans)
            except Exception as error:  # noqa: BLE001 - as the parent: a bad batch fails, never raises
                _logger.error("Failed to encode span batch: %s", error)
                result.error = error
                return SpanExportResult.FAILURE
            if _is_request_too_large(body, self._max_request_size):
                _logger.warning(
                    "Dropping span batch: serialized size %d bytes exceeds max_request_size %d bytes.",
                    len(body),
                    self._max_request_size,
                )
                result.error = RequestPayloadTooLargeError(
                    f"Serialized span request size {len(body)} bytes exceeds max_request_size "
                    f"{self._max_request_size} bytes."
                )
                return SpanExportResult.FAILURE
            sent = self._client.export(body)
            if not sent.success:
                result.error = sent.error
                result.error_attrs = (
                    {HTTP_RESPONSE_STATUS_CODE: sent.status_code} if sent.status_code is not None else None
                )
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS


class GrpcSpanExporter(GrpcOTLPSpanExporter):
    """OTLP/gRPC: the request message parsed from our bytes (a C-speed parse, then the stub serializes)."""

    def _translate_data(self, data: Sequence[Item]) -> ExportTraceServiceRequest:
        request: ExportTraceServiceRequest = ExportTraceServiceRequest.FromString(encode_spans(data))
        return request

    def _count_data(self, data: Sequence[Item]) -> int:
        return span_count(data)


class RequestBatchSpanProcessor(BatchSpanProcessor, RequestSpanProcessor):
    """The SDK's batch span processor (``OTEL_BSP_*`` settings, worker thread, flush and shutdown) that
    also queues a finished request, encoded, as one entry, for ``HttpSpanExporter`` or ``GrpcSpanExporter``.

    One entry per request instead of one per span saves a queue hand-over and building an SDK span
    object per span; the queue and batch sizes then count requests and spans alike.
    """

    def __init__(self, exporter: HttpSpanExporter | GrpcSpanExporter) -> None:
        super().__init__(exporter)

    def on_request_end(self, request: RequestTrace) -> None:
        try:
            encoded = encode_request(request)
        except Exception:  # called as a request ends: spans that cannot be encoded are dropped, not raised
            _logger.exception("Failed to encode the spans of a request; they are dropped")
            return
        # The SDK's BatchProcessor is generic over what it queues; the exporters above take encoded requests.
        batch = self._batch_processor
        queue = batch._queue
        if not batch._shutdown and len(queue) < batch._max_export_batch_size - 1:
            # What its emit does while the queue is short of a batch, without the process-id check that
            # its os.register_at_fork hook already covers: queued, with no drop and no worker to wake.
            queue.appendleft(encoded)
        else:
            batch.emit(encoded)  # type: ignore[arg-type]


__all__ = ["GrpcSpanExporter", "HttpSpanExporter", "RequestBatchSpanProcessor"]
