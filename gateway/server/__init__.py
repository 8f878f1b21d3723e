"""The asyncio side: listeners, per-connection loops, start-up and shutdown."""
