"""fastshard-redis: the Redis backend plugin for fastshard.

>>> import fastshard.backends
>>> backend = fastshard.backends.get("redis", url="redis://127.0.0.1:6379/0", namespace="app")
"""

from fastshard_redis.backend import RedisBackend

__all__ = ["RedisBackend"]
