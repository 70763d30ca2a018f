"""The v2 HTTP write API through influxdb-client's async client.

Serves InfluxDB 2.x, 3.x, 1.8+ (``bucket`` = "db/rp", token "user:password") and
VictoriaMetrics (which ignores token, org and bucket).
"""

from __future__ import annotations

from typing import Any

import aiohttp
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from monitor.inventory.model import TimeseriesSettings
from monitor.tsdb.backend import connection_error, http_error, public_url


class Influx2Backend:
    def __init__(self, settings: TimeseriesSettings) -> None:
        self.name = f"influxdb2 {public_url(settings.url)} bucket={settings.bucket}"
        self._settings = settings
        self._client: Any = None
        self._write_api: Any = None

    async def write(self, body: bytes) -> None:
        settings = self._settings
        if self._client is None:  # the async client must be created inside the running loop
            token = settings.token.reveal() if settings.token else ""
            self._client = InfluxDBClientAsync(
                url=settings.url, token=token, org=settings.org, timeout=int(settings.timeout * 1000)
            )
            self._write_api = self._client.write_api()
        try:
            await self._write_api.write(
                bucket=settings.bucket, org=settings.org, record=body, write_precision=WritePrecision.NS
            )
        except ApiException as exc:
            if not exc.status:  # the client refused to build the request: a bug, not the server
                raise http_error(self.name, 400, str(exc.reason)) from exc
            body_text = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body or "")
            raise http_error(self.name, int(exc.status), body_text or str(exc.reason or "")) from exc
        except InfluxDBError as exc:
            raise connection_error(self.name, exc) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise connection_error(self.name, exc) from exc
        except Exception as exc:  # the client's internals: keep the batch rather than crash the daemon
            raise connection_error(self.name, exc) from exc

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
