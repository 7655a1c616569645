"""The RabbitMQ management HTTP API, for the one thing AMQP 0-9-1 cannot do: list queues.

Needs the ``rabbitmq_management`` plugin (``rabbitmq-plugins enable rabbitmq_management``).
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from urllib.parse import quote, urlparse

from fastshard.backends.retry import call_with_retry
from fastshard.errors import BackendError, InvalidValueError


class ManagementAPI:
    def __init__(self, url: str, *, timeout: float, attempts: int = 3) -> None:
        parts = urlparse(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidValueError(f"management_url must be an http(s):// URL, got {url!r}")
        port = f":{parts.port}" if parts.port else ""
        self._base = f"{parts.scheme}://{parts.hostname}{port}{parts.path.rstrip('/')}"
        user, password = parts.username or "guest", parts.password or "guest"
        self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self._timeout = timeout
        self._attempts = attempts

    def _get(self, path: str) -> object:
        req = urllib.request.Request(self._base + path, headers={"Authorization": self._auth})

        def fetch() -> object:
            try:
                with urllib.request.urlopen(req, timeout=self._timeout) as resp:
                    return json.load(resp)
            except urllib.error.HTTPError as exc:
                raise BackendError(
                    f"RabbitMQ management API {self._base}{path}: HTTP {exc.code} {exc.reason}"
                ) from exc

        return call_with_retry(fetch, what=f"RabbitMQ management API at {self._base}",
                               retry_on=(urllib.error.URLError, OSError), attempts=self._attempts)

    def queue_names(self, vhost: str, prefix: str = "") -> list[str]:
        """Names of the queues in ``vhost`` starting with ``prefix``."""
        rows = self._get(f"/api/queues/{quote(vhost, safe='')}?columns=name")
        if not isinstance(rows, list):
            raise BackendError(f"RabbitMQ management API returned {type(rows).__name__}, not a list")
        return [r["name"] for r in rows if isinstance(r, dict) and r.get("name", "").startswith(prefix)]
