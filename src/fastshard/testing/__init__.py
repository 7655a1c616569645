"""Test support shipped with fastshard, for this project and for plugin authors.

* :mod:`fastshard.testing.servers` – ``require_server``: skip locally, fail under ``CI=true``.
* :mod:`fastshard.testing.conformance` – the suite every backend must pass.
"""
