"""Billing webhooks: signed event deliveries to organisations' endpoints, from a durable outbox.

``model`` (records, URL rule), ``signing`` (sign and verify, Stripe's scheme),
``outbox`` (write an event and its deliveries inside the deciding
transaction), ``sender`` (one signed POST), ``deliverer`` (retries with
back-off), ``summaries`` (usage summaries per organisation). See docs/webhooks.md.
"""
