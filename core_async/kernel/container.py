"""AsyncIoCContainer: lazy async factories, singletons, reverse-order close.

A component is registered under a key (its class, or a typed :class:`Token`
for things that are not a class of their own) with an async factory. It is
created on first :meth:`AsyncIoCContainer.resolve`, once, even when many tasks
ask at the same moment, and the container remembers the order of creation.
:meth:`AsyncIoCContainer.aclose` closes every created component in the
reverse of that order, so a component is closed before the ones it was built
from. A failing (or hanging) close is logged, reported in the returned list
and does not stop the others from closing.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, cast

log = logging.getLogger("codeagent.kernel.container")

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Token(Generic[T_co]):
    """A typed key for a component that has no class of its own (a URL, a limit, a stub server)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Token({self.name!r})"


Key = type[T] | Token[T]
Factory = Callable[["AsyncIoCContainer"], Awaitable[T]]
Closer = Callable[[T], Awaitable[None] | None]


class ContainerError(Exception):
    """Misuse of the container: unknown key, cycle, resolve after close."""


class DependencyCycle(ContainerError):
    """A factory asked (directly or not) for the component it is building."""


@dataclass(frozen=True, slots=True)
class CloseFailure:
    """One component whose close raised or timed out during :meth:`AsyncIoCContainer.aclose`."""

    key: str
    error: BaseException


@dataclass(slots=True)
class _Registration(Generic[T]):
    factory: Factory[T]
    closer: Closer[T] | None
    singleton: bool


_resolving: ContextVar[tuple[object, ...]] = ContextVar("codeagent_kernel_resolving", default=())


def key_name(key: object) -> str:
    """A readable name of a key for logs and errors."""
    if isinstance(key, Token):
        return key.name
    if isinstance(key, type):
        return key.__qualname__
    return repr(key)


async def default_close(instance: object) -> None:
    """Close ``instance`` the usual way: ``aclose()``, else ``close()`` (awaited when it returns an awaitable)."""
    closer = getattr(instance, "aclose", None) or getattr(instance, "close", None)
    if closer is None:
        return
    result = closer()
    if inspect.isawaitable(result):
        await result


class AsyncIoCContainer:
    """Registers async factories and hands out lazily created components.

    ``close_timeout`` bounds each component's close, so that one hanging
    resource cannot hold the whole shutdown.
    """

    def __init__(self, *, close_timeout: float = 5.0) -> None:
        self.close_timeout = close_timeout
        self._registrations: dict[object, _Registration[Any]] = {}
        self._instances: dict[object, Any] = {}
        self._created: list[tuple[object, Any, Closer[Any] | None]] = []
        self._locks: dict[object, asyncio.Lock] = {}
        self._closed = False

    # ----------------------------------------------------------------- registration

    def register(
        self,
        key: Key[T],
        factory: Factory[T],
        *,
        close: Closer[T] | None = None,
        singleton: bool = True,
    ) -> None:
        """Register ``factory`` under ``key``; ``close`` overrides :func:`default_close`.

        With ``singleton=False`` every resolve creates a new instance; each one
        is still remembered and closed on shutdown.
        """
        if self._closed:
            raise ContainerError("the container is closed")
        if key in self._instances:
            raise ContainerError(f"{key_name(key)} was already created; register it before first use")
        self._registrations[key] = _Registration(factory, close, singleton)

    def register_instance(self, key: Key[T], instance: T, *, close: Closer[T] | None = None) -> None:
        """Register an already built component; it is closed on shutdown only when ``close`` is given."""
        if self._closed:
            raise ContainerError("the container is closed")
        self._instances[key] = instance
        self._created.append((key, instance, close))

    def is_registered(self, key: object) -> bool:
        """Whether ``key`` has a factory or an instance."""
        return key in self._registrations or key in self._instances

    def created(self) -> list[str]:
        """Names of the components created so far, in order of creation."""
        return [key_name(key) for key, _, _ in self._created]

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` has run."""
        return self._closed

    # ----------------------------------------------------------------- resolution

    async def resolve(self, key: Key[T]) -> T:
        """The component of ``key``, created on first use by its factory.

        Concurrent first resolves of a singleton create it once. Raises
        :class:`ContainerError` for an unknown key or after :meth:`aclose`,
        :class:`DependencyCycle` when a factory needs its own product, and
        whatever the factory raises (nothing is cached then; a later resolve
        tries again).
        """
        if self._closed:
            raise ContainerError(f"cannot resolve {key_name(key)}: the container is closed")
        if key in self._instances:
            return cast(T, self._instances[key])
        registration = self._registrations.get(key)
        if registration is None:
            raise ContainerError(f"nothing registered for {key_name(key)}")
        stack = _resolving.get()
        if key in stack:
            chain = " -> ".join(key_name(k) for k in (*stack, key))
            raise DependencyCycle(f"dependency cycle: {chain}")
        if not registration.singleton:
            return cast(T, await self._create(key, registration, stack))
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key in self._instances:
                return cast(T, self._instances[key])
            instance = cast(T, await self._create(key, registration, stack))
            self._instances[key] = instance
            return instance

    async def _create(self, key: object, registration: _Registration[T], stack: tuple[object, ...]) -> T:
        token = _resolving.set((*stack, key))
        try:
            instance = await registration.factory(self)
        finally:
            _resolving.reset(token)
        if self._closed:  # shut down while the factory ran: do not leak what it made
            await self._close_one(key, instance, registration.closer or default_close)
            raise ContainerError(f"{key_name(key)} was created after the container closed")
        self._created.append((key, instance, registration.closer or default_close))
        log.debug("created %s", key_name(key))
        return instance

    # ----------------------------------------------------------------- shutdown

    async def _close_one(self, key: object, instance: Any, closer: Closer[Any] | None) -> CloseFailure | None:
        if closer is None:
            return None
        try:
            async with asyncio.timeout(self.close_timeout):
                result = closer(instance)
                if inspect.isawaitable(result):
                    await result
        except TimeoutError as exc:
            log.error("closing %s took longer than %.1fs; moving on", key_name(key), self.close_timeout)
            return CloseFailure(key_name(key), exc)
        except Exception as exc:
            log.error("closing %s failed: %s: %s", key_name(key), type(exc).__name__, exc)
            return CloseFailure(key_name(key), exc)
        return None

    async def aclose(self) -> list[CloseFailure]:
        """Close every created component in reverse order of creation; return the failures.

        Every close is attempted even when an earlier one fails. Calling it
        again is a no-op that returns an empty list.
        """
        if self._closed:
            return []
        self._closed = True
        failures: list[CloseFailure] = []
        while self._created:
            key, instance, closer = self._created.pop()
            failure = await self._close_one(key, instance, closer)
            if failure is not None:
                failures.append(failure)
        self._instances.clear()
        return failures

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
