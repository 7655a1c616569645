"""What the pika backend and the aio-pika backend agree on, so that either one reads what the
other wrote and both declare the same broker objects.

* the options both accept, checked once (:func:`check_settings`);
* names: the exchange, a shard's queue, a later group's queue, the first-group marker, and
  the marker's declare arguments (RabbitMQ refuses a redeclare with other arguments, so a
  difference here would make the two backends fail each other's declares);
* message ids: a random per-backend prefix plus a hex counter (:class:`MessageIds`);
* message headers: the key header plus the ``fs`` stamp (:mod:`fastshard.backends.stamp`),
  encoded by :func:`message_headers` and read back into a :class:`Message` by
  :func:`decode_message`, whichever client library decoded the AMQP table.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

from fastshard.backends.base import Message
from fastshard.backends.stamp import STAMP_HEADER, unpack_stamp
from fastshard.errors import (
    InvalidTypeError,
    InvalidValueError,
    check_finite,
    check_int,
    check_seconds,
)

#: the epoch header of messages written before the ``fs`` stamp (STAMP_HEADER) replaced it;
#: still read
EPOCH_HEADER = "fastshard-epoch"
KEY_HEADER = "fastshard-key"
OWNER_SUFFIX = "/.owner"
DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


@dataclass(frozen=True, slots=True)
class Settings:
    """Checked backend options, plus what follows from them (exchange, queue arguments)."""

    url: str
    prefix: str
    exchange: str
    queue_args: dict[str, Any]
    prefetch: int
    visibility_timeout: float
    max_message_bytes: int
    timeout: float
    retries: int
    vhost: str
    management_url: str


def check_settings(
    url: str,
    *,
    management_url: str | None,
    prefix: str,
    queue_type: str,
    single_active_consumer: bool,
    prefetch: int,
    visibility_timeout: float,
    max_message_bytes: int,
    timeout: float,
    retries: int,
) -> Settings:
    """The options of either backend, each checked with an error naming it and its range."""
    if not isinstance(url, str) or urlparse(url).scheme not in ("amqp", "amqps"):
        raise InvalidValueError(f"url must be an amqp:// or amqps:// URL, got {url!r}")
    if not isinstance(prefix, str) or len(prefix) > 50 or any(c in prefix for c in "/\x00"):
        raise InvalidValueError(f"prefix must be at most 50 characters without '/', got {prefix!r}")
    if queue_type not in ("classic", "quorum"):
        raise InvalidValueError(f"queue_type must be 'classic' or 'quorum', got {queue_type!r}")
    if not isinstance(single_active_consumer, bool):
        raise InvalidTypeError("single_active_consumer must be a bool")
    t = check_finite("timeout", timeout)
    if not 0.05 <= t <= 3600:
        raise InvalidValueError(f"timeout must be in [0.05, 3600] seconds, got {timeout}")
    queue_args: dict[str, Any] = {"x-queue-type": queue_type}
    if single_active_consumer:
        queue_args["x-single-active-consumer"] = True
    parts = urlparse(url)
    # the AMQP URI spec: an empty path is the default vhost "/", "%2F" spells "/" itself
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    if management_url is None:
        user = unquote(parts.username) if parts.username else "guest"
        password = unquote(parts.password) if parts.password else "guest"
        management_url = f"http://{user}:{password}@{parts.hostname or 'localhost'}:15672"
    return Settings(
        url=url, prefix=prefix, exchange=prefix + "fastshard", queue_args=queue_args,
        prefetch=check_int("prefetch", prefetch, 1, 65_535),
        visibility_timeout=check_seconds("visibility_timeout", visibility_timeout),
        max_message_bytes=check_int("max_message_bytes", max_message_bytes, 1, 128 * 2**20),
        timeout=t, retries=check_int("retries", retries, 1, 100), vhost=vhost,
        management_url=management_url,
    )


def rabbit_queue_name(prefix: str, queue: str, group: str | None = None) -> str:
    """The RabbitMQ queue behind a shard (``group=None``) or a later group of it."""
    return prefix + queue + ("" if group is None else "/" + group)


def owner_marker(prefix: str, queue: str) -> str:
    """The empty queue whose declare arguments name the first group of ``queue``."""
    return prefix + queue + OWNER_SUFFIX


def owner_arguments(group: str) -> dict[str, str]:
    """The marker's arguments: a redeclare naming another group is refused (406) by RabbitMQ."""
    return {"x-dead-letter-exchange": "fastshard-owner:" + group}


class MessageIds:
    """Message ids chosen before sending: a random prefix per backend plus a hex counter
    (unique without a uuid4 per message; ``next()`` on a count is atomic under the GIL)."""

    __slots__ = ("counter", "prefix")

    def __init__(self) -> None:
        self.prefix = uuid.uuid4().hex[:16]
        self.counter = itertools.count(1)

    def take(self, n: int) -> list[str]:
        prefix, counter = self.prefix, self.counter
        return [f"{prefix}{next(counter):x}" for _ in range(n)]


def message_headers(others: Mapping[str, str], key: Any, stamp: str) -> dict[str, Any]:
    """The AMQP headers of one message: the caller's other headers, the key, the stamp.

    ``key`` must be what the client library encodes as an AMQP byte array (``bytes`` for
    pika, ``bytearray`` for aio-pika/pamqp), so both put the same field type on the wire.
    """
    return {**others, KEY_HEADER: key, STAMP_HEADER: stamp}


def decode_message(queue: str, raw: Mapping[str, Any] | None, body: bytes, mid: str,
                   count: int) -> Message:
    """A delivered message as a :class:`Message`, from the AMQP headers as either pika
    (byte arrays as ``bytes``) or pamqp (byte arrays as ``bytearray``) decoded them."""
    raw = dict(raw or {})
    key = raw.pop(KEY_HEADER, b"")
    legacy_epoch = raw.pop(EPOCH_HEADER, 0)  # written before the stamp
    headers = {k: (bytes(v).decode("utf-8", "replace") if isinstance(v, (bytes, bytearray))
                   else str(v)) for k, v in raw.items()}
    epoch = int(legacy_epoch) if isinstance(legacy_epoch, int) else 0
    stamp = headers.get(STAMP_HEADER)
    if stamp is not None:
        stamped = unpack_stamp(stamp, headers)
        if stamped is not None:  # else another producer's "fs" header: kept as it is
            del headers[STAMP_HEADER]
            epoch = stamped
    kb = bytes(key) if isinstance(key, (bytes, bytearray)) else str(key).encode("utf-8")
    return Message(queue, mid, kb, bytes(body), headers, epoch, count)
