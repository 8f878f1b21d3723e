"""Masking as the running gateway holds it: the key, the schema source, the engine,
and (optionally) the embedded registry served over HTTP. Started and stopped by
:class:`~gateway.server.app.Gateway`."""

from __future__ import annotations

import logging

from aiohttp import web

from gateway.config import MaskingConfig
from gateway.errors import ConfigError
from gateway.masking import keyfile
from gateway.masking.embedded import EmbeddedRegistry, app
from gateway.masking.engine import MaskingEngine
from gateway.masking.registry import RegistryClient

log = logging.getLogger(__name__)


class MaskingService:
    """What ``masking:`` configures, running."""

    def __init__(self, config: MaskingConfig) -> None:
        self.config = config
        # Read now: a bad key file or schema directory stops the start.
        key = keyfile.load(config.key_file)
        self.embedded: EmbeddedRegistry | None = None
        self.client: RegistryClient | None = None
        if config.registry is not None:
            self.client = RegistryClient.from_config(config.registry)
            source: RegistryClient | EmbeddedRegistry = self.client
        else:
            self.embedded = source = EmbeddedRegistry.load(config.schemas_dir)
        self.engine = MaskingEngine(
            source, key, config.inline_max_bytes, max_batch_bytes=config.max_batch_bytes
        )
        self._runner: web.AppRunner | None = None
        log.info(
            "masking on: key %s, schemas from %s",
            key.fingerprint,
            config.registry.url if config.registry is not None else config.schemas_dir,
        )

    async def start(self) -> None:
        if self.config.serve_registry is None:
            return
        if self.embedded is None:
            raise ConfigError(
                "masking.serve_registry serves the embedded registry; with masking.registry "
                "set, producers use that registry instead"
            )
        host, _, port = self.config.serve_registry.rpartition(":")
        self._runner = web.AppRunner(app(self.embedded), access_log=None)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, host.strip("[]"), int(port)).start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise ConfigError(
                f"masking.serve_registry {self.config.serve_registry}: {exc.strerror}"
            ) from exc

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.client is not None:
            await self.client.close()
