"""Masking record data before it leaves the gateway (see the package modules)."""
