"""The gateway's HTTP edge: bounds on slow, abusive and malformed clients, before authentication.

Two layers, each with one job:

* ``EdgeProtocol`` (``edge.protocol``), the connection: a cap on open connections, a deadline on each
  request's line and headers, and OpenAI-shaped answers instead of the server's plain-text ones;
* ``EdgeMiddleware`` (``edge.asgi``), the request: header count, ``Host`` with ``--auth none``,
  ``Content-Type`` of the JSON routes, a deadline on the body, 499 for an upload the client abandoned,
  and ``Retry-After`` on every 503.

See docs/operations/edge.md.
"""

from gateway.edge.asgi import EdgeConfig, EdgeMiddleware, edge_config
from gateway.edge.protocol import ConnectionLimits, EdgeProtocol, edge_protocol

__all__ = ["ConnectionLimits", "EdgeConfig", "EdgeMiddleware", "EdgeProtocol", "edge_config", "edge_protocol"]
