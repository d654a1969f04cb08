# unasync: sync
# """The blocking SDK: :class:`~sandpit.Sandbox` and what hangs off it, each module generated from its asyncio twin
# in ``sandpit/_async/`` by ``scripts/unasync.py``."""
# unasync: async
"""The asyncio SDK: :class:`~sandpit.AsyncSandbox` and what hangs off it.

Every module here is the source of its blocking twin in ``sandpit/_sync/``, which ``scripts/unasync.py`` generates
(``async``/``await`` dropped, names mapped: ``AsyncSandbox`` → ``Sandbox``, ``aclose`` → ``close`` ...). Where the
two differ by more than that, the module holds both versions between ``unasync`` markers (see the script).
"""
# unasync: end
