"""How an ID is packed: ``[time shard][host id][counter]`` in one unsigned 64-bit integer.

The time shard is the highest field, so a later shard's IDs are numerically (and, in the
fixed-width text form, lexicographically) larger than an earlier shard's. Within a shard a
host's counter runs from 0 upwards and never wraps.

Inside the generator a *position* is the ID with the host field removed,
``shard << counter_bits | counter``: one host's IDs are increasing in their positions, and a
block ``[start, end)`` of positions never crosses a shard boundary, so it maps to a run of
consecutive ID integers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fastshard.errors import InvalidTypeError, InvalidValueError, check_finite, check_int

#: 2025-01-01T00:00:00Z; shard 0 starts here by default
DEFAULT_EPOCH = 1_735_689_600.0

# Crockford's base32: no I, L, O, U (ambiguous or accidental words); decoding forgives case,
# I/L -> 1, O -> 0 and hyphens.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DECODE = {c: i for i, c in enumerate(_ALPHABET)}
_DECODE.update({c.lower(): i for c, i in list(_DECODE.items())})
_DECODE.update({"I": 1, "i": 1, "L": 1, "l": 1, "O": 0, "o": 0})
#: 13 characters hold 65 bits, so every 64-bit ID has the same width and text order = number order
TEXT_WIDTH = 13


@dataclass(frozen=True, slots=True)
class IdLayout:
    """Bit widths and time-shard granularity of an ID.

    The default (29 + 10 + 24 = 63 bits, so IDs stay positive in signed 64-bit columns):
    1-second shards for 17 years from 2025 (until 2042), 1024 host ids, 16,777,216 IDs per
    host per second. ``time_bits + host_bits + counter_bits`` may be up to 64; trade bits
    between the fields for more hosts or a longer time range.
    """

    time_bits: int = 29
    host_bits: int = 10
    counter_bits: int = 24
    shard_seconds: float = 1.0
    epoch: float = DEFAULT_EPOCH

    def __post_init__(self) -> None:
        for name in ("time_bits", "host_bits", "counter_bits"):
            check_int(name, getattr(self, name), 1, 62)
        total = self.time_bits + self.host_bits + self.counter_bits
        if total > 64:
            raise InvalidValueError(
                f"time_bits + host_bits + counter_bits must be at most 64, got "
                f"{self.time_bits} + {self.host_bits} + {self.counter_bits} = {total}"
            )
        seconds = check_finite("shard_seconds", self.shard_seconds)
        if not 0.001 <= seconds <= 86_400.0:
            raise InvalidValueError(
                f"shard_seconds must be in [0.001, 86400] seconds, got {self.shard_seconds}"
            )
        epoch = check_finite("epoch", self.epoch)
        if epoch < 0:
            raise InvalidValueError(f"epoch must be a Unix time >= 0, got {self.epoch}")
        object.__setattr__(self, "shard_seconds", seconds)
        object.__setattr__(self, "epoch", epoch)

    # ------------------------------------------------------------------ ranges
    @property
    def total_bits(self) -> int:
        return self.time_bits + self.host_bits + self.counter_bits

    @property
    def max_host(self) -> int:
        return (1 << self.host_bits) - 1

    @property
    def counter_capacity(self) -> int:
        """IDs one host can issue in one time shard."""
        return 1 << self.counter_bits

    @property
    def max_shard(self) -> int:
        """The last usable time shard (with 64 bits the very last one is kept free so that a
        block's exclusive end still fits in 64 bits)."""
        top = (1 << self.time_bits) - 1
        return top - 1 if self.total_bits == 64 else top

    @property
    def max_id(self) -> int:
        return (1 << self.total_bits) - 1

    def check_host(self, host_id: Any) -> int:
        return check_int("host_id", host_id, 0, self.max_host)

    # ------------------------------------------------------------------ time
    def shard_of(self, unix_time: float) -> int:
        """The time shard containing ``unix_time`` (seconds since 1970)."""
        t = check_finite("unix_time", unix_time)
        shard = math.floor((t - self.epoch) / self.shard_seconds)
        if not 0 <= shard <= self.max_shard:
            raise InvalidValueError(
                f"unix_time must fall in this layout's time range [{self.epoch}, "
                f"{self.shard_start(self.max_shard + 1)}), got {unix_time}"
            )
        return shard

    def shard_start(self, shard: int) -> float:
        """Unix time at which ``shard`` begins."""
        return self.epoch + shard * self.shard_seconds

    # ------------------------------------------------------------------ packing
    def compose(self, shard: int, host_id: int, counter: int) -> int:
        check_int("shard", shard, 0, self.max_shard)
        self.check_host(host_id)
        check_int("counter", counter, 0, self.counter_capacity - 1)
        return (shard << (self.host_bits + self.counter_bits)) | (host_id << self.counter_bits) | counter

    def parse(self, id_: Any) -> tuple[int, int, int]:
        """``(time_shard, host_id, counter)`` of an ID."""
        v = check_int("id", id_, 0, self.max_id)
        cb, hb = self.counter_bits, self.host_bits
        return v >> (hb + cb), (v >> cb) & self.max_host, v & (self.counter_capacity - 1)

    def time_of(self, id_: Any) -> float:
        """Unix time at which the ID's time shard began."""
        return self.shard_start(self.parse(id_)[0])

    def id_of_position(self, position: int, host_id: int) -> int:
        """The ID at ``position`` (``shard << counter_bits | counter``) for ``host_id``."""
        cb = self.counter_bits
        shard = position >> cb
        return (shard << (self.host_bits + cb)) | (host_id << cb) | (position & ((1 << cb) - 1))

    def position_of(self, id_: int) -> int:
        shard, _host, counter = self.parse(id_)
        return (shard << self.counter_bits) | counter

    def as_tuple(self) -> tuple[int, int, int, float, float]:
        return (self.time_bits, self.host_bits, self.counter_bits, self.shard_seconds, self.epoch)


DEFAULT_LAYOUT = IdLayout()


def parse(id_: Any, layout: IdLayout = DEFAULT_LAYOUT) -> tuple[int, int, int]:
    """``(time_shard, host_id, counter)`` of ``id_`` under ``layout``."""
    return layout.parse(id_)


def to_text(id_: Any) -> str:
    """The 13-character Crockford base32 form; sorts like the numbers do."""
    v = check_int("id", id_, 0, (1 << 64) - 1)
    chars = []
    for _ in range(TEXT_WIDTH):
        chars.append(_ALPHABET[v & 31])
        v >>= 5
    return "".join(reversed(chars))


def from_text(text: Any) -> int:
    """Inverse of :func:`to_text`; forgives case, hyphens, and I/L for 1, O for 0."""
    if not isinstance(text, str):
        raise InvalidTypeError(f"text must be a str, got {type(text).__name__}")
    s = text.replace("-", "")
    if not 1 <= len(s) <= TEXT_WIDTH:
        raise InvalidValueError(
            f"text must be 1-{TEXT_WIDTH} Crockford base32 characters, got {text!r}"
        )
    v = 0
    for ch in s:
        d = _DECODE.get(ch)
        if d is None:
            raise InvalidValueError(
                f"text must use Crockford base32 characters (0-9, A-Z without U), got {ch!r} in {text!r}"
            )
        v = (v << 5) | d
    if v >= 1 << 64:
        raise InvalidValueError(f"text must encode a 64-bit ID (at most 'FZZZZZZZZZZZZ'), got {text!r}")
    return v
