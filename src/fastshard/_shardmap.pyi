"""Type stubs for the compiled slice table (ext/_shardmap.pyx)."""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Key = str | bytes | int

class SliceTable:
    """One epoch's immutable table: sorted slice starts -> shard index -> shard id."""

    starts: npt.NDArray[np.uint64]
    slice_shard: npt.NDArray[np.int32]
    shard_names: tuple[str, ...]
    epoch: int
    def __init__(
        self,
        starts: Sequence[int] | npt.NDArray[np.uint64],
        slice_shard: Sequence[int] | npt.NDArray[np.int32],
        shard_names: Sequence[str],
        epoch: int = 1,
    ) -> None: ...
    def __len__(self) -> int: ...
    def slice_of_hash(self, h: int) -> int: ...

class ShardMapCore:
    """Lookups against the currently installed SliceTable."""

    def _install_table(self, table: SliceTable) -> None: ...
    @property
    def epoch(self) -> int: ...
    def shard_for(self, key: Key) -> str: ...
    def shard_and_epoch_for(self, key: Key) -> tuple[str, int]: ...
    def shard_for_hash(self, h: int) -> str: ...
    def slice_for_hash(self, h: int) -> int: ...
    def slices_for_many(self, hashes: npt.NDArray[np.uint64]) -> npt.NDArray[np.int32]: ...
    def shards_for_many(
        self, keys: Sequence[Key] | npt.NDArray[np.uint64]
    ) -> npt.NDArray[np.int32]: ...
