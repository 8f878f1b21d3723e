"""The Kafka wire protocol without I/O: framing, request/response codec, versions.

Bytes in, typed requests out; responses in, bytes out. Nothing here may import
asyncio, aiokafka's network code or the server (an import-linter contract checks it).
"""
