"""Prometheus text exposition with vLLM's metric names and labels.

Routing and autoscaling logic reads exactly these series from real vLLM
servers, so the simulator speaks the same names (and the ``model_name``
label) to let that logic be tested unchanged.
"""

from __future__ import annotations

from lockgate.sim.engine import Engine

_FINISH_REASONS = ("stop", "length", "abort")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_metrics(engine: Engine, model_name: str) -> bytes:
    label = f'model_name="{_escape(model_name)}"'
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: list[tuple[str, str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for sample, extra, value in samples:
            labels = f"{label},{extra}" if extra else label
            lines.append(f"{sample}{{{labels}}} {value!r}")

    family(
        "vllm:num_requests_running",
        "gauge",
        "Number of requests in model execution batches.",
        [("vllm:num_requests_running", "", float(engine.running))],
    )
    family(
        "vllm:num_requests_waiting",
        "gauge",
        "Number of requests waiting to be processed.",
        [("vllm:num_requests_waiting", "", float(engine.waiting))],
    )
    family(
        "vllm:kv_cache_usage_perc",
        "gauge",
        "KV-cache usage. 1 means 100 percent usage.",
        [("vllm:kv_cache_usage_perc", "", engine.kv_cache_usage)],
    )
    counters = (
        ("vllm:prompt_tokens", "Number of prefill tokens processed.", engine.prompt_tokens_total),
        (
            "vllm:generation_tokens",
            "Number of generation tokens processed.",
            engine.completion_tokens_total,
        ),
        (
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
            engine.prefix_cache_queries,
        ),
        (
            "vllm:prefix_cache_hits",
            "Prefix cache hits, in terms of number of cached tokens.",
            engine.prefix_cache_hits,
        ),
    )
    for name, help_text, value in counters:
        family(name, "counter", help_text, [(name + "_total", "", float(value))])
    by_reason = engine.success_by_reason
    reasons = list(_FINISH_REASONS) + sorted(set(by_reason) - set(_FINISH_REASONS))
    family(
        "vllm:request_success",
        "counter",
        "Count of successfully processed requests.",
        [
            (
                "vllm:request_success_total",
                f'finished_reason="{_escape(r)}"',
                float(by_reason.get(r, 0)),
            )
            for r in reasons
        ],
    )
    lines.append("")
    return "\n".join(lines).encode()
