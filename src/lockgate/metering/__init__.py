"""Metering: the usage ledger (one record per request, counted exactly once), pricing,
and exports.

The request path hands ``UsageLedger.settle`` its context and returns; a journal
thread makes records durable in a local SQLite file, and a flusher copies them
to the store. See docs/metering.md. Import from the submodules (``ledger``,
``pricing``, ``record``, ``export``): the store imports ``record``, so this
package's ``__init__`` stays empty to keep that import free of cycles.
"""
