"""Where one request's time went, computed once from its context's loop-time stamps.

The metrics and the access log both read these figures, so a dashboard and a
log line can never disagree about what "gateway overhead" or "TTFT" means.
The definitions follow ``Server-Timing`` (``dataplane/response_headers.py``):

* ``total_s``: from the request's arrival to the end of the response.
* ``upstream_s``: from sending the upstream request to the end of its body
  (its head, then the end of the request, when the body never finished).
  ``None`` when the request never reached an upstream.
* ``gateway_s``: ``total_s - upstream_s`` (all of ``total_s`` without an
  upstream): authentication, admission, queueing, routing, translation,
  and writing to the client.
* ``ttft_s`` (streams only): from sending upstream to the first event relayed
  to the client, i.e. the upstream's time to first token as the gateway saw
  it. Engines send their response head before the first token, so the head
  alone would understate it; non-streaming answers arrive whole and have none.
* ``tpot_s`` (streams with at least two output tokens): the OpenTelemetry
  ``gen_ai.server.time_per_output_token``: decode time after the first token
  divided by the tokens after the first.
"""

from __future__ import annotations

from lockgate.dataplane.context import RequestContext

# (total_s, gateway_s, upstream_s, ttft_s, tpot_s): a plain tuple, unpacked by the
# callers, because a NamedTuple costs another 0.3 µs per request to build.
Timings = tuple[float, float, float | None, float | None, float | None]


def request_timings(ctx: RequestContext) -> Timings:
    """The figures above for a settled request (``finished_at`` set by the pipeline)."""
    started = ctx.started_at
    finished = ctx.finished_at if ctx.finished_at is not None else started
    total = finished - started
    sent = ctx.upstream_sent_at
    if sent is None:
        return (total, total, None, None, None)
    done = ctx.upstream_done_at or ctx.upstream_first_byte_at or finished
    upstream = done - sent
    gateway = total - upstream
    if not ctx.is_stream:
        return (total, gateway if gateway > 0.0 else 0.0, upstream, None, None)
    first = ctx.first_byte_to_client_at or ctx.upstream_first_byte_at
    if first is None:
        return (total, gateway if gateway > 0.0 else 0.0, upstream, None, None)
    ttft = first - sent
    tpot = None
    usage = ctx.usage
    if usage is not None and usage.completion_tokens > 1 and done > first:
        tpot = (done - first) / (usage.completion_tokens - 1)
    return (total, gateway if gateway > 0.0 else 0.0, upstream, ttft, tpot)
