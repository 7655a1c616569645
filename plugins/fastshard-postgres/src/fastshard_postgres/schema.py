"""The tables of one fastshard schema (see docs/backend-postgres.md), created on first use.

Every object lives in a schema of its own (option ``schema``), so deployments and test runs
sharing a database never see each other and ``DROP SCHEMA ... CASCADE`` removes one.
"""

from __future__ import annotations

import hashlib
import re

from fastshard.errors import InvalidTypeError, InvalidValueError

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
#: PostgreSQL truncates identifiers (and LISTEN channel names) to 63 bytes
MAX_CHANNEL_BYTES = 63


def validate_schema(schema: object) -> str:
    if not isinstance(schema, str):
        raise InvalidTypeError(f"schema must be a str, got {type(schema).__name__}")
    if not _SCHEMA_RE.match(schema):
        raise InvalidValueError(
            "schema must be 1-63 characters of lower-case letters, digits and '_', "
            f"not starting with a digit; got {schema!r}"
        )
    return schema


def channel_name(schema: str, channel: str) -> str:
    """The LISTEN/NOTIFY channel behind a fastshard channel (hashed when too long)."""
    name = f"{schema}.{channel}"
    if len(name.encode()) <= MAX_CHANNEL_BYTES:
        return name
    return f"fs_{hashlib.sha1(name.encode()).hexdigest()}"


def queue_wakeup_channel(schema: str) -> str:
    """Where a commit of new messages is announced (the payload is the queue name)."""
    return channel_name(schema, "__queues__")




def ddl(schema: str) -> list[str]:
    """Statements creating the schema's tables; each is idempotent."""
    s = f'"{schema}"'
    return [
        f"CREATE SCHEMA IF NOT EXISTS {s}",
        # next_seq hands out dense per-queue sequence numbers: publishers of one queue
        # serialize on this row, so a reader never sees seq n+1 committed before seq n.
        f"""CREATE TABLE IF NOT EXISTS {s}.queues (
            name text PRIMARY KEY,
            next_seq bigint NOT NULL DEFAULT 0)""",
        f"""CREATE TABLE IF NOT EXISTS {s}.messages (
            queue text NOT NULL,
            seq bigint NOT NULL,
            key bytea NOT NULL,
            value bytea NOT NULL,
            headers jsonb,
            epoch bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (queue, seq))""",
        # cursor: the last seq handed to the group (new deliveries start after it)
        # the foreign key makes a consumer racing delete_queue fail cleanly instead of
        # leaving a group row (with a stale cursor) behind for a queue re-created later
        f"""CREATE TABLE IF NOT EXISTS {s}.groups (
            queue text NOT NULL REFERENCES {s}.queues (name) ON DELETE CASCADE,
            grp text NOT NULL,
            cursor bigint NOT NULL,
            PRIMARY KEY (queue, grp))""",
        f"""CREATE TABLE IF NOT EXISTS {s}.pending (
            queue text NOT NULL,
            grp text NOT NULL,
            seq bigint NOT NULL,
            consumer text NOT NULL,
            redeliver_at timestamptz NOT NULL,
            delivery_count integer NOT NULL,
            PRIMARY KEY (queue, grp, seq))""",
        f"""CREATE TABLE IF NOT EXISTS {s}.kv (
            key text PRIMARY KEY,
            value bytea NOT NULL,
            version bigint NOT NULL)""",
        f"""CREATE TABLE IF NOT EXISTS {s}.counters (
            name text PRIMARY KEY,
            value bigint NOT NULL)""",
        # owner NULL: released. seq: the last fencing token handed out for this lease.
        f"""CREATE TABLE IF NOT EXISTS {s}.leases (
            name text PRIMARY KEY,
            owner text,
            token bigint NOT NULL,
            seq bigint NOT NULL,
            expires_at timestamptz NOT NULL)""",
        # results of write requests, so a retry after a lost COMMIT reply is not applied twice
        f"""CREATE TABLE IF NOT EXISTS {s}.requests (
            id text PRIMARY KEY,
            result text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now())""",
        # notify payloads too large for NOTIFY's 8000-byte limit
        f"""CREATE TABLE IF NOT EXISTS {s}.notifications (
            id bigserial PRIMARY KEY,
            payload bytea NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now())""",
    ]
