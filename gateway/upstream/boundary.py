"""The one place where aiokafka's and the socket's failures become gateway errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from aiokafka import errors as aiokafka_errors

from gateway.errors import GatewayError, UpstreamTimeout, UpstreamUnavailable


@contextlib.contextmanager
def map_errors(where: str) -> Iterator[None]:
    """Translate aiokafka and socket failures into gateway errors."""
    try:
        yield
    except GatewayError:
        raise
    except (TimeoutError, aiokafka_errors.KafkaTimeoutError) as exc:
        raise UpstreamTimeout(f"{where}: timed out") from exc
    except (aiokafka_errors.KafkaError, OSError, EOFError) as exc:
        raise UpstreamUnavailable(f"{where}: {type(exc).__name__}: {exc}") from exc
