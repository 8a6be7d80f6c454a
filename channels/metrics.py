"""Request latency of the channel adapters, as Prometheus histograms.

The adapters time their own provider requests here; the router exposes these with the rest of
its metrics (`router/metrics.py`) at `GET /metrics`. They live under `channels/` so the adapters
need nothing from `router/`."""

from __future__ import annotations

from prometheus_client import Histogram

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

LINE_REQUEST_SECONDS = Histogram(
    "router_line_request_seconds",
    "LINE Messaging API request latency by path and HTTP status ('error': no answer).",
    ["path", "status"],
    buckets=_BUCKETS,
)

SMTP_SEND_SECONDS = Histogram(
    "router_smtp_send_seconds",
    "One email's SMTP exchange (connecting when needed) by the server's reply code"
    " ('error': no reply).",
    ["status"],
    buckets=_BUCKETS,
)
