"""An OpenAI-compatible inference engine simulator that behaves like vLLM under load.

It is the upstream of the gateway's tests, demo and benchmark: deterministic
content and exact token counts, engine-like timing (FIFO queue behind a
bounded batch, prefill, decode, batch slowdown, prefix caching), vLLM's
metric names, and faults on request.

Usage::

    async with SimServer(SimConfig(ttft_ms=0, tokens_per_s=0)) as sim:
        client = openai.AsyncOpenAI(base_url=sim.base_url, api_key="x")
        ...
        assert sim.engine.completed == 1

Endpoints: POST /v1/chat/completions, /v1/completions, /v1/embeddings,
/v1/rerank (also /rerank, /v2/rerank); GET /v1/models, /health, /metrics;
GET /sim/stats, POST /sim/reset, GET /sim/requests (last ``recent_requests``
requests outside /sim/, with lower-cased headers and the parsed JSON body).

Steering headers (all optional):
  x-sim-fault: error-500 | error-429 | error-503 | hang | slow-first-token |
               cut | stall | malformed | no-done
  x-sim-fault-after: N   SSE events before cut/stall/malformed (default 3;
                         the role chunk counts; 0 = right after the headers)
  x-sim-delay-ms: N      latency before anything is sent (slow-first-token: 2000)
  x-sim-retry-after: S   Retry-After of error-429 (default 2)
  x-sim-output-tokens: N natural answer length (config ``output_tokens``)
  x-sim-usage-in-final-choice: 1
                         usage on the last chunk with choices, not an extra one

Accounting: prompt tokens of a chat = sum(content tokens + 3) + 3
(``count_chat_prompt_tokens``); a completion's answer has
min(max_tokens, natural length) tokens, finish "length" when max_tokens <=
the natural length (as vLLM), and every generated word is one token, so
``count_text_tokens(content) == completion_tokens``. Cached tokens: whole
``block_size`` blocks of the longest cached prefix, never including the last
prompt token. Every inference request lands in exactly one of ``completed``,
``cancelled`` (client left), ``failed[fault kind]`` or ``rejected[reason]``.
"""

from lockgate.sim.config import FAULT_KINDS, FaultKind, SimConfig
from lockgate.sim.engine import Engine
from lockgate.sim.server import SimServer
from lockgate.sim.tokens import VOCABULARY, count_chat_prompt_tokens, count_text_tokens

__all__ = [
    "FAULT_KINDS",
    "VOCABULARY",
    "Engine",
    "FaultKind",
    "SimConfig",
    "SimServer",
    "count_chat_prompt_tokens",
    "count_text_tokens",
]
