"""Example configuration files shipped with the gateway."""
