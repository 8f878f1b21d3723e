"""Field and text masking, without I/O.

The engine behind masking rules: type-preserving masking methods
(:mod:`~gateway.masking.methods`), Avro bodies in Confluent wire format
(:mod:`~gateway.masking.avro`), JSON values (:mod:`~gateway.masking.jsonmask`) and
free text (:mod:`~gateway.masking.detectors`). Everything here is bytes in, bytes out:
no sockets, no event loop, no registry lookups, no policy decisions, no caches that
outlive a call's objects. The caller fetches schemas, picks the rules and caches the
compiled maskers.

Errors::

    MaskingError            anything that stops a value from being masked; the caller
     |                      must not pass the clear value on (fail closed)
     +-- NotWireFormat      a value that is not in Confluent wire format

Messages name the rule path, the type or the detector at fault; they never quote the
value being masked nor the masking key.
"""

from __future__ import annotations


class MaskingError(Exception):
    """A value could not be masked, or rules cannot apply to a schema."""


class NotWireFormat(MaskingError):
    """A value that does not start with Confluent's magic byte and schema id."""


__all__ = ["MaskingError", "NotWireFormat"]
