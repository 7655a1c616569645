# cython: language_level=3
# Cython looks up the own .pxd of module fastshard._shardmap by its dotted name; the
# declarations live in _shardmap.pxd (the file next to _shardmap.pyx).
include "_shardmap.pxd"
