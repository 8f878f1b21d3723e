"""The audit trail: what every connection, login and request did, as versioned events.

``events`` builds the events, ``sink`` is what they are written to, ``recorder`` holds
the connection and authentication hooks. Nothing here touches sockets or upstream.
"""
