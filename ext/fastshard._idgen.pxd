# Cython looks up the own .pxd of module fastshard._idgen by its dotted name; the
# declarations live in _idgen.pxd (the file next to _idgen.pyx).
include "_idgen.pxd"
