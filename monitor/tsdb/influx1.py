"""InfluxDB 1.x native ``/write`` (what Debian ships: 1.6.7 answers 404 on ``/api/v2/write``).

Plain aiohttp: influxdb-client only speaks the v2 API. Credentials go in a Basic auth header, not
the query string, so they never end up in a proxy or server access log.
"""

from __future__ import annotations

import base64

import aiohttp

from monitor.inventory.model import TimeseriesSettings
from monitor.tsdb.backend import connection_error, http_error, public_url


class Influx1Backend:
    def __init__(self, settings: TimeseriesSettings) -> None:
        self.name = f"influxdb1 {public_url(settings.url)} db={settings.database}"
        self._url = settings.url.rstrip("/") + "/write"
        self._params = {"db": settings.database, "precision": "ns"}
        if settings.retention_policy:
            self._params["rp"] = settings.retention_policy
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if settings.username:
            password = settings.password.reveal() if settings.password else ""
            token = base64.b64encode(f"{settings.username}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout)
        self._session: aiohttp.ClientSession | None = None

    async def write(self, body: bytes) -> None:
        if self._session is None:  # created lazily: a ClientSession belongs to the running loop
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            try:
                status, text = await self._post(body)
            except aiohttp.ServerDisconnectedError:
                # A pooled keep-alive connection the server had already closed: one fresh attempt,
                # so an idle connection does not send a healthy database's batch to the spool.
                status, text = await self._post(body)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise connection_error(self.name, exc) from exc
        if not 200 <= status < 300:
            raise http_error(self.name, status, text)

    async def _post(self, body: bytes) -> tuple[int, str]:
        assert self._session is not None
        async with self._session.post(self._url, params=self._params, data=body, headers=self._headers) as resp:
            if 200 <= resp.status < 300:
                return resp.status, ""
            return resp.status, await resp.text(errors="replace")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
