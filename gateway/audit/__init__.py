"""The audit trail: what every connection, login and request did, as versioned events,
in a hash-chained, signed, append-only log.

``events`` builds the events, ``sink`` is what they are written to, ``recorder`` holds
the connection and authentication hooks. ``canonical``, ``chain``, ``keys``,
``segments`` and ``writer`` make the log (``log.AuditLog`` runs the writer for the
event loop); ``verify`` checks one offline. Nothing here touches sockets or upstream.
"""

from gateway.audit.segments import read_events

__all__ = ["read_events"]
