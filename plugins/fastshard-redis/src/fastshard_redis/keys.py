"""The Redis key layout of one fastshard namespace (see docs/backend-redis.md).

Every key starts with ``<namespace>:`` so that several deployments (or test runs) share a
server without seeing each other, and :meth:`KeyLayout.namespace_pattern` finds them all.

Redis Cluster: keys that one Lua script touches together must hash to the same slot, so
the object name is wrapped in a hash tag ``{...}`` and every companion key (the fencing
sequence of a lease, the de-duplication record of a request) repeats that tag. Different
objects have different tags and spread over the cluster. Braces and ``%`` inside a name are
percent-encoded, so a user key can never open or close a tag of its own (``kv`` keys may
contain any character but NUL; queue, counter and lease names never contain braces).
"""

from __future__ import annotations

_ESCAPES = str.maketrans({"%": "%25", "{": "%7B", "}": "%7D"})
_GLOB_SPECIAL = str.maketrans({c: "\\" + c for c in "*?[]\\"})


def escape_tag(name: str) -> str:
    """``name`` made safe to sit inside a ``{...}`` hash tag (reversible)."""
    return name.translate(_ESCAPES)


def unescape_tag(text: str) -> str:
    return text.replace("%7D", "}").replace("%7B", "{").replace("%25", "%")


def escape_glob(text: str) -> str:
    """``text`` matched literally by a SCAN ``MATCH`` pattern."""
    return text.translate(_GLOB_SPECIAL)


class KeyLayout:
    """Names of the keys holding each object of one namespace."""

    __slots__ = ("ns", "_kv_prefix")

    def __init__(self, namespace: str) -> None:
        self.ns = namespace
        self._kv_prefix = f"{namespace}:kv:{{"

    # queues ---------------------------------------------------------------
    @property
    def queue_registry(self) -> str:
        """A set of the queue names created in this namespace (for ``list_queues``)."""
        return f"{self.ns}:queues"

    def stream(self, queue: str) -> str:
        """The stream holding a queue's messages and its consumer groups."""
        return f"{self.ns}:q:{{{queue}}}"

    @staticmethod
    def trimmed_requests(stream: str) -> str:
        """Prefix of the hashes ``<prefix>:<bucket>`` that remember ``request id -> stream id``
        of single publishes trimmed (acked) while a retry could still look for them; same
        slot as the stream."""
        return f"{stream}:rids"

    # key-value ------------------------------------------------------------
    def kv(self, key: str) -> str:
        """A hash ``{value, version}`` for one metadata key."""
        return f"{self._kv_prefix}{escape_tag(key)}}}"

    def kv_scan_pattern(self, prefix: str) -> str:
        return f"{escape_glob(self._kv_prefix + escape_tag(prefix))}*"

    def kv_key_of(self, redis_key: str) -> str | None:
        """The user key stored under ``redis_key`` (``None`` for a companion key)."""
        if not (redis_key.startswith(self._kv_prefix) and redis_key.endswith("}")):
            return None
        return unescape_tag(redis_key[len(self._kv_prefix) : -1])

    def channel(self, channel: str) -> str:
        """The pub/sub channel behind ``notify``/``subscribe``."""
        return f"{self.ns}:ch:{channel}"

    # counters and leases --------------------------------------------------
    def counter(self, name: str) -> str:
        return f"{self.ns}:ctr:{{{name}}}"

    def lease(self, name: str) -> str:
        """A hash ``{owner, token, exp_us, released}`` for one lease."""
        return f"{self.ns}:lease:{{{name}}}"

    def lease_seq(self, name: str) -> str:
        """The lease's fencing-token sequence (INCR), in the same slot as the lease."""
        return f"{self.ns}:lease:{{{name}}}:seq"

    # companions -----------------------------------------------------------
    @staticmethod
    def request(main_key: str, request_id: str) -> str:
        """De-duplication record of one write request on ``main_key`` (same slot)."""
        return f"{main_key}:req:{request_id}"

    def namespace_pattern(self) -> str:
        return f"{escape_glob(self.ns)}:*"
