"""Translators between the client's API format and each upstream's.

Providers turn a validated client request into upstream bytes and upstream
bytes back into client bytes plus usage. They never see tenants, limits or
the store.
"""
