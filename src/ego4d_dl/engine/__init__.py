"""The transfer engine: concurrent ranged GETs into part files, verified, journaled, renamed.

One ``asyncio.TaskGroup`` per run. Two bounds keep work finite whatever the plan's size: a
limit on GET requests in flight (``limiter``: found from the measured rate, or the user's
``--concurrency N``; halved under throttling) and a semaphore over files open at once. Every
GET carries ``If-Match`` with the planned ETag, so bytes of two object versions are never
spliced. Bytes stream in bounded chunks to
``<dest>.part`` at their offsets, MD5ed on the way in a worker thread; a file is renamed to
its final name only after its ETag (plain or multipart composite) checks out, and only after
its data is durable. Progress is reported only through ``EventSink``; the engine never prints.
Imports ``store``, ``journal``, ``files``, ``integrity``, ``limiter``, ``retry``, ``plan``,
``events`` and ``errors``.

``ls`` is its map: ``core`` (the Engine: scheduling, transfers, retries, verification),
``committer`` (durable group commits), ``state`` (settings and per-transfer state),
``checksums`` (S3's full-object checksums).
"""

from .core import Engine
from .state import EngineSettings

__all__ = ["Engine", "EngineSettings"]
