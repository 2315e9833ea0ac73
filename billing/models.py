"""Billing: price catalogue, metering, usage, invoices (see docs/architecture.md)."""
