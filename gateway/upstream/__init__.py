"""Connections to the real Kafka clusters, with credentials only the gateway holds.

Every call into aiokafka happens in this package and its exceptions are mapped to
:mod:`gateway.errors` here.
"""
