# cython: language_level=3
# Cython looks up the own .pxd of module fastshard._ring by its dotted name; the
# declarations live in _ring.pxd (the file next to _ring.pyx).
include "_ring.pxd"
