"""A coroutine that can also be used directly as an async context manager."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Coroutine, Generator, Generic, Optional, TypeVar

__all__ = ["AwaitableContext"]

T = TypeVar("T")


class AwaitableContext(Generic[T]):
    """Wraps a coroutine producing ``T`` so that both ``obj = await f()`` and ``async with f() as obj:`` work;
    leaving the block calls ``exit(obj)`` (e.g. kill and close)."""

    def __init__(self, coro: Coroutine[Any, Any, T], exit: Callable[[T], Awaitable[None]]) -> None:
        self._coro = coro
        self._exit = exit
        self._obj: Optional[T] = None

    def __await__(self) -> Generator[Any, None, T]:
        return self._coro.__await__()

    async def __aenter__(self) -> T:
        self._obj = await self._coro
        return self._obj

    async def __aexit__(self, *exc: Any) -> None:
        if self._obj is not None:
            await self._exit(self._obj)
