"""Shared kernel of ChargeOps: settings, database, bus, contracts, observability, CLI."""
