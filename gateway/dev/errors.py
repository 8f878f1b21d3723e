"""The two ways a dev-cluster operation fails: both are one line meant for a person."""

from __future__ import annotations

from gateway.errors import DevClusterError


class DevError(DevClusterError):
    """A dev-cluster operation failed; the message is one line meant for a person."""


class ToolMissingError(DevError):
    """Java or Maven is not installed (the CLI exits with 2)."""
