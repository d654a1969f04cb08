"""The blocking SDK (``src/sandpit/_sync/``) is generated from the asyncio one (``src/sandpit/_async/``) by
``scripts/unasync.py``: the checked-in modules are current, and the rewriting does what the script says. No daemon."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "unasync.py"


@pytest.fixture(scope="module")
def unasync() -> ModuleType:
    spec = importlib.util.spec_from_file_location("unasync", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["unasync"] = module
    spec.loader.exec_module(module)
    return module


def test_the_blocking_sdk_is_current(unasync: ModuleType) -> None:
    stale = unasync._stale(unasync.generate())
    assert not stale, "src/sandpit/_sync/ is stale: run scripts/unasync.py\n" + "".join(stale)


SOURCE = '''"""An asyncio module."""
import asyncio


class AsyncThing:
    async def __aenter__(self) -> AsyncThing:
        return self

    async def read(self, t: AsyncTransport) -> int:
        """Reads with an :class:`AsyncThing`."""
        n = (await t.request("GET", "/")).json()["n"]
        async for chunk in t.aiter_bytes():
            await asyncio.sleep(0.1)
        # unasync: sync
        # return n + 1
        # unasync: async
        return n
        # unasync: end
    # unasync: async

    def only_async(self) -> None:
        pass
    # unasync: end
'''

GENERATED = '''"""An asyncio module."""
import asyncio


class Thing:
    def __enter__(self) -> Thing:
        return self

    def read(self, t: SyncTransport) -> int:
        """Reads with an :class:`Thing`."""
        n = t.request("GET", "/").json()["n"]
        for chunk in t.iter_bytes():
            time.sleep(0.1)
        return n + 1
'''


def test_rewriting(unasync: ModuleType) -> None:
    out = unasync.unasync(SOURCE, "thing.py")
    assert out == unasync.HEADER.format(name="thing.py") + GENERATED


@pytest.mark.parametrize(
    "source,error",
    [
        ("# unasync: sync\n# x = 1\n", "without '# unasync: end'"),
        ("# unasync: end\n", "unexpected"),
        ("# unasync: sync\nx = 1\n# unasync: end\n", "must be '# <code>'"),
        ("x = 1  # unasync: sync\n", "alone on its line"),
        ("    # unasync: sync\n    # x = 1\n# unasync: async\nx = 2\n# unasync: end\n", "not indented"),
    ],
)
def test_malformed_markers_are_errors(unasync: ModuleType, source: str, error: str) -> None:
    with pytest.raises(unasync.SourceError, match=error):
        unasync.unasync(source, "bad.py")
