"""Failover between the configured clusters: what MirrorMaker 2 has replicated from
the active cluster to the standby one (``replication``), read from the records it
keeps (``mirror_records``)."""
