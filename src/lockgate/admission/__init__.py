"""Admission control: rate limits, token quotas, concurrency and spend budgets."""
