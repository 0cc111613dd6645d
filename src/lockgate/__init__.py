"""Lockgate: one secure, metered, observable front door to every model an organisation runs."""

__version__ = "0.1.0"
