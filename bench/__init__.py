"""Lockgate's benchmark harness: the gateway vs. no gateway vs. nginx, in one run.

Run it with ``python -m bench``; see bench/README.md for what it measures and why.
"""
