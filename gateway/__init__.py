"""A Kafka gateway that authenticates, authorizes, masks and audits every client."""

__version__ = "0.1.0"
