"""The tables, created with ``IF NOT EXISTS`` when the backend first connects."""

from __future__ import annotations

import re

from fastshard.errors import InvalidTypeError, InvalidValueError

_KEYSPACE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")

SCHEMA = (
    # versioned key-value (shard maps, item -> shard, session -> node): one partition per key
    "CREATE TABLE IF NOT EXISTS kv (key text PRIMARY KEY, value blob, version bigint)",
    # fetch-add counters (ID blocks) as bigint updated by LWT, never counter columns
    "CREATE TABLE IF NOT EXISTS counters (name text PRIMARY KEY, value bigint)",
    # the current holder of each lease; expires_at: ms since the epoch (client clock)
    "CREATE TABLE IF NOT EXISTS leases (name text PRIMARY KEY, owner text, fence bigint, expires_at bigint)",
    # fencing tokens outlive their leases so they only ever grow (TOKEN is a reserved word)
    "CREATE TABLE IF NOT EXISTS lease_tokens (name text PRIMARY KEY, fence bigint)",
    # change notifications, polled by subscribers; rows expire after a minute
    "CREATE TABLE IF NOT EXISTS notifications (channel text, at timeuuid, payload blob, "
    "PRIMARY KEY (channel, at)) WITH default_time_to_live = 60",
)


def validate_keyspace(name: object) -> str:
    if not isinstance(name, str):
        raise InvalidTypeError(f"keyspace must be a str, got {type(name).__name__}")
    if not _KEYSPACE_RE.match(name):
        raise InvalidValueError(
            f"keyspace must be 1-48 characters of letters, digits and '_', starting with a letter; got {name!r}"
        )
    return name
