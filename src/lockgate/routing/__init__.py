"""Routing: which deployment serves a request, and what to do when it fails.

Domain logic only — no HTTP, no pipeline. The pipeline's route stage asks for a
``RoutePlan`` (the model's pool, then its fallbacks); the forward stage leases a
member from a pool per attempt, sends, and ends the lease with an ``Outcome``.

* ``spec`` — the config sections (strategies, retries, health, fallbacks)
* ``strategies``, ``affinity`` — choosing among healthy deployments
* ``member``, ``health`` — live state: load, latency, ejection, circuit breaker
* ``retry`` — failure classes, back-off, Retry-After, the retry budget
* ``pool`` — pools and route plans; ``checks`` — active health checks

See docs/routing.md. (Nothing is re-exported here: ``lockgate.config`` imports
``routing.spec``, and importing the rest from this package would be circular.)
"""
