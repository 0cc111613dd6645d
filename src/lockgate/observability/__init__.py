"""Metrics, access log and structured logs: names and fields declared in one place.

* ``metrics.GatewayMetrics`` — request counters and latency/token histograms;
  a ``Settler`` and a Prometheus collector.
* ``admission_metrics.AdmissionCollector`` — the admission stage's counters,
  read at scrape time.
* ``node.NodeMetrics`` — one ``/metrics`` page for all worker processes.
* ``access_log.AccessLog`` — one JSON line per request, written off the loop.
* ``app_log.JsonLogFormatter`` — application logs as JSON, credentials masked.
* ``timings.request_timings`` — the one definition of total, gateway,
  upstream, TTFT and time per output token.

See docs/observability.md. Nothing here is imported by the data plane; the
service wiring passes these objects in.
"""
