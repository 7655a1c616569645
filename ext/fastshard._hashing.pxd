# cython: language_level=3
# Cython looks up the own .pxd of module fastshard._hashing by its dotted name; the
# declarations live in _hashing.pxd (the file next to _hashing.pyx).
include "_hashing.pxd"
