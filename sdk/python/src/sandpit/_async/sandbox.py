# unasync: sync
# """``Sandbox``: the sandbox lifecycle plus every way to run commands, with blocking calls."""
# unasync: async
"""``AsyncSandbox``: the sandbox lifecycle plus every way to run commands, with asyncio."""
# unasync: end

from __future__ import annotations

import dataclasses

# unasync: sync
# import time
# unasync: async
import asyncio
import time
# unasync: end
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

# unasync: sync
# from typing import Generator
# unasync: async
from typing import AsyncGenerator
# unasync: end

# unasync: sync
# from .._attach import DEFAULT_SHELL, AttachConfigure, attach_blocking, attach_options
# unasync: async
from .._attach import DEFAULT_SHELL, AttachConfigure, attach_command, attach_options
from .._awaitable import AwaitableContext
# unasync: end
from .._errors import NotFoundError, SandboxError
from .._network import ExposedPort, NetworkPolicy, expose_body, host_of, policy_body, ports_of
from .._options import Stdin
from .._process import ProcessRef, start_body
from .._sandbox import _START_WAIT_S, Configure, _create_body, _fork_body, _list_params, _options, _path
from .._stream import ClosingAsyncIterator
from .._observe import Time, event_key, event_params, metric_params, sample_key
from .._types import CommandResult, EventPage, LifecycleEvent, MetricSample, SandboxInfo, SnapshotInfo, VolumeMountLike
from .commands import AsyncCommands
from .files import AsyncFiles
from .observe import sse_items
from .process import AsyncExecHandle, AsyncProcessApi, AsyncProcesses, AsyncProcessHandle
from .transport import AsyncTransport

__all__ = ["AsyncForkResult", "AsyncSandbox"]

# unasync: async


async def _close_and_kill(sbx: AsyncSandbox) -> None:
    await sbx.__aexit__(None, None, None)


async def _kill_forks(fork: AsyncForkResult) -> None:
    await fork.__aexit__(None, None, None)
# unasync: end


class AsyncSandbox:
    # unasync: sync
    # """A sandbox, driven with blocking calls.
    #
    # Create one with :meth:`create` (``with Sandbox.create() as sbx:`` kills it when the block ends) or attach
    # to an existing one with :meth:`connect`. The daemon's URL and key come from the ``url``/``api_key``
    # arguments, else ``SANDPIT_URL``/``SANDPIT_API_KEY``, else the local daemon and its key file.
    #
    # Attributes:
    #     commands: Superserve's and Declaw's command API (:class:`~sandpit.Commands`).
    #     processes: Hyperbrowser's process API (:class:`~sandpit.Processes`).
    #     files: the files API with E2B's names (:class:`~sandpit.Files`).
    # """
    # unasync: async
    """A sandbox driven with asyncio; the same surface as :class:`Sandbox` with ``await``, plus
    ``commands.spawn`` (interactive WebSocket sessions).

    ``sbx = await AsyncSandbox.create()`` or ``async with AsyncSandbox.create() as sbx:`` (which kills the
    sandbox when the block ends); the same with :meth:`connect`.
    """
    # unasync: end

    def __init__(self, info: SandboxInfo, transport: AsyncTransport) -> None:
        self._info = info
        self._transport = transport
        #: This sandbox's access token (from create or :meth:`rotate_access_token`); ``None`` when connected.
        self.access_token: Optional[str] = info.access_token
        self._api = AsyncProcessApi(transport, info.id)
        self.commands = AsyncCommands(self._api)
        self.processes = AsyncProcesses(self._api)
        self.files = AsyncFiles(transport, info.id)

    def __repr__(self) -> str:
        return f"AsyncSandbox(id={self.id!r}, state={self._info.state!r})"

    @property
    def id(self) -> str:
        """The sandbox's id."""
        return self._info.id

    @property
    def sandbox_id(self) -> str:
        """Alias of :attr:`id`."""
        return self._info.id

    # -- lifecycle -------------------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        template: Optional[str] = None,
        *,
        timeout: Optional[int] = None,
        cpu: Optional[float] = None,
        memory_mb: Optional[int] = None,
        pids: Optional[int] = None,
        disk_mb: Optional[int] = None,
        env: Optional[Dict[str, str]] = None,
        envs: Optional[Dict[str, str]] = None,
        metadata: Optional[Dict[str, str]] = None,
        on_timeout: Optional[str] = None,
        network: Optional[NetworkPolicy] = None,
        volumes: Optional[Sequence[VolumeMountLike]] = None,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> AwaitableContext[AsyncSandbox]:
        """Create a sandbox and return it once it runs.

        Args:
            template: template name (default ``base``).
            timeout: seconds until the sandbox's deadline (server default 300); see :meth:`set_timeout`.
            cpu, memory_mb, pids, disk_mb: resource limits.
            env / envs: environment variables of every process in the sandbox.
            metadata: free-form labels (filter on them with :meth:`list`).
            on_timeout: ``"kill"`` (default) or ``"pause"`` at the deadline.
            network: outbound policy, ``{"egress": "allow"|"deny", "allow_out": [...], "deny_out": [...]}``
                (CIDRs, addresses, domains, ``*.domain``); the daemon's default when absent.
            volumes: volumes to mount (at most 16; ``isolate`` backend), each a :class:`~sandpit.VolumeMount`
                or a dict ``{"name": ..., "path": ..., "read_only": ...}``, at its own absolute path.
                :class:`NotFoundError` for an unknown volume (or another tenant's),
                :class:`InvalidArgumentError` for a bad path or one path twice.
            url, api_key: the daemon; default from the environment (see the class docs).
            request_timeout: seconds for ordinary HTTP requests (default 30).
        """
        body = _create_body(
            template, timeout, cpu, memory_mb, pids, disk_mb, env, envs, metadata, on_timeout, network, volumes
        )
        # unasync: sync
        # return cls._create(body, url, api_key, request_timeout)
        # unasync: async
        return AwaitableContext(cls._create(body, url, api_key, request_timeout), _close_and_kill)
        # unasync: end

    @classmethod
    async def _create(
        cls, body: Dict[str, Any], url: Optional[str], api_key: Optional[str], request_timeout: Optional[float]
    ) -> AsyncSandbox:
        transport = AsyncTransport(url, api_key, request_timeout)
        try:
            info = SandboxInfo.from_json(await transport.request("POST", "/v1/sandboxes", json=body))
        except BaseException:
            await transport.aclose()
            raise
        return await cls._started(info, transport)

    @classmethod
    async def _started(cls, info: SandboxInfo, transport: AsyncTransport) -> AsyncSandbox:
        """The sandbox a create answered with (``POST /v1/sandboxes``, or one of a fork's), driven through
        ``transport``, once it runs: waits out ``starting``, keeping the access token only that answer carries.
        Closes ``transport`` if it fails."""
        try:
            token = info.access_token
            deadline = time.monotonic() + _START_WAIT_S
            while info.state == "starting" and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                info = SandboxInfo.from_json(await transport.request("GET", _path(info.id)))
            if token is not None and info.access_token is None:
                info = dataclasses.replace(info, access_token=token)
        except BaseException:
            await transport.aclose()
            raise
        return cls(info, transport)

    @classmethod
    def connect(
        cls,
        sandbox_id: str,
        *,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> AwaitableContext[AsyncSandbox]:
        """Attach to an existing sandbox, resuming it if it is paused. :class:`NotFoundError` if it is gone."""
        # unasync: sync
        # return cls._connect(sandbox_id, url, api_key, request_timeout)
        # unasync: async
        return AwaitableContext(cls._connect(sandbox_id, url, api_key, request_timeout), _close_and_kill)
        # unasync: end

    @classmethod
    async def _connect(
        cls, sandbox_id: str, url: Optional[str], api_key: Optional[str], request_timeout: Optional[float]
    ) -> AsyncSandbox:
        transport = AsyncTransport(url, api_key, request_timeout)
        try:
            info = SandboxInfo.from_json(await transport.request("POST", _path(sandbox_id, "/connect")))
        except BaseException:
            await transport.aclose()
            raise
        return cls(info, transport)

    @classmethod
    async def get(
        cls,
        sandbox_id: str,
        *,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> AsyncSandbox:
        """Look a sandbox up by id without resuming it (unlike :meth:`connect`).

        :class:`NotFoundError` if it is gone.
        """
        transport = AsyncTransport(url, api_key, request_timeout)
        try:
            info = SandboxInfo.from_json(await transport.request("GET", _path(sandbox_id)))
        except BaseException:
            await transport.aclose()
            raise
        return cls(info, transport)

    @classmethod
    async def list(
        cls,
        *,
        state: Optional[str] = None,
        metadata: Optional[Dict[str, str]] = None,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
    ) -> List[SandboxInfo]:
        """The daemon's sandboxes, optionally only those in ``state`` and whose metadata has every given pair."""
        transport = AsyncTransport(url, api_key)
        try:
            d = await transport.request("GET", "/v1/sandboxes", params=_list_params(state, metadata))
        finally:
            await transport.aclose()
        return [SandboxInfo.from_json(x) for x in d.get("sandboxes", [])]

    async def info(self) -> SandboxInfo:
        """The sandbox's current state, limits, metadata and deadline."""
        self._info = SandboxInfo.from_json(await self._transport.request("GET", _path(self.id)))
        return self._info

    get_info = info

    async def is_running(self) -> bool:
        """True while the sandbox exists and is ``running``."""
        try:
            return (await self.info()).state == "running"
        except NotFoundError:
            return False

    async def pause(self) -> SandboxInfo:
        """Freeze every process of the sandbox. Any later call on it resumes it first."""
        self._info = SandboxInfo.from_json(await self._transport.request("POST", _path(self.id, "/pause")))
        return self._info

    async def resume(self) -> SandboxInfo:
        """Thaw a paused sandbox."""
        self._info = SandboxInfo.from_json(await self._transport.request("POST", _path(self.id, "/resume")))
        return self._info

    async def set_timeout(self, timeout: int) -> SandboxInfo:
        """Move the sandbox's deadline to ``timeout`` seconds from now."""
        d = await self._transport.request("POST", _path(self.id, "/timeout"), json={"timeout": int(timeout)})
        self._info = SandboxInfo.from_json(d)
        return self._info

    async def rotate_access_token(self) -> str:
        """A new access token for this sandbox: it opens this sandbox only (processes, files, ports, pause/resume,
        info), so hand it to a page or a helper instead of the API key. The previous token stops working."""
        d = await self._transport.request("POST", _path(self.id, "/access-token"))
        self.access_token = str(d["access_token"])
        return self.access_token

    # -- events and metrics ---------------------------------------------------------------------------------

    async def events(
        self,
        *,
        type: Union[str, Iterable[str], None] = None,
        since: Time = None,
        after: Optional[int] = None,
        limit: Optional[int] = None,
    ) -> EventPage:
        """``GET /v1/sandboxes/{id}/events``: this sandbox's lifecycle events, oldest first (``created``, ``paused``,
        ``resumed``, …). :class:`NotFoundError` once it is deleted: its history stays readable with
        ``Events().list(sandbox=id)``."""
        params = event_params(type=type, since=since, after=after, limit=limit)
        return EventPage.from_json(await self._transport.request("GET", _path(self.id, "/events"), params=params))

    def events_stream(
        self, *, type: Union[str, Iterable[str], None] = None, after: Optional[int] = None
    ) -> ClosingAsyncIterator[LifecycleEvent]:
        """``GET /v1/sandboxes/{id}/events/stream``: this sandbox's events as they happen (with ``after``, the stored
        ones after that id first, ``after=0`` for all); ends after ``sandbox.killed`` or when the sandbox is deleted.
        A cut connection is reopened after the last event delivered (``Last-Event-ID``)."""
        path, params = _path(self.id, "/events/stream"), event_params(type=type, after=after)
        events = sse_items(self._transport, path, params, LifecycleEvent.from_json, event_key)
        return ClosingAsyncIterator(events, lambda e: e.type == "sandbox.killed")

    async def metrics(self, *, start: Time = None, end: Time = None) -> List[MetricSample]:
        """``GET /v1/sandboxes/{id}/metrics``: cpu, memory, disk and pids samples between ``start`` and ``end``
        (datetimes, RFC 3339 text or epoch ms; inclusive), oldest first. The daemon samples each running sandbox
        every ``metrics_interval_ms`` (5 s by default) and keeps an hour of them."""
        d = await self._transport.request("GET", _path(self.id, "/metrics"), params=metric_params(start, end))
        return [MetricSample.from_json(x) for x in d or []]

    def metrics_stream(self) -> AsyncGenerator[MetricSample, None]:
        """``GET /v1/sandboxes/{id}/metrics/stream``: each sample as it is taken (the latest one already taken
        first); ends when the sandbox is deleted. A cut connection is reopened without repeating a sample."""
        path = _path(self.id, "/metrics/stream")
        return sse_items(self._transport, path, {}, MetricSample.from_json, sample_key, by_id=False)

    # -- snapshots and forks --------------------------------------------------------------------------------

    async def snapshot(self, name: str) -> SnapshotInfo:
        """Make template ``name`` of this sandbox's filesystem as it is now (its processes are frozen for the last
        part of the copy, ``frozen_ms``); the sandbox runs on. Create sandboxes from it with
        ``create(template=name)``; it belongs to this sandbox's tenant. Needs the ``isolate`` backend.
        :class:`ConflictError` if the name is taken, :class:`InvalidArgumentError` for a bad name (1-64
        characters from ``a-z 0-9 . _ -``)."""
        d = await self._transport.request("POST", _path(self.id, "/snapshots"), json={"name": name}, wait=True)
        return SnapshotInfo.from_json(d)

    def fork(
        self,
        count: int = 1,
        *,
        timeout: Optional[int] = None,
        cpu: Optional[float] = None,
        memory_mb: Optional[int] = None,
        pids: Optional[int] = None,
        disk_mb: Optional[int] = None,
        env: Optional[Dict[str, str]] = None,
        envs: Optional[Dict[str, str]] = None,
        metadata: Optional[Dict[str, str]] = None,
        on_timeout: Optional[str] = None,
        network: Optional[NetworkPolicy] = None,
        volumes: Optional[Sequence[VolumeMountLike]] = None,
    ) -> AwaitableContext[AsyncForkResult]:
        """Make ``count`` (1-100) new sandboxes whose filesystems start as this one's is now, each going its own
        way from there; running processes and memory are not copied. The options are :meth:`create`'s (but
        ``template``); a fork mounts the ``volumes`` given here, not the source's (a volume's files are shared,
        never copied). The result's ``sandboxes`` are running, each with its own access token; its ``snapshot``
        is the template they start from, deleted by the daemon with the last of them. Leaving
        ``async with sbx.fork(...) as fork:`` kills them. A bad count or option is an
        :class:`InvalidArgumentError`; over a tenant quota (:class:`ResourceExhaustedError`) none is made."""
        body = _fork_body(
            count, timeout, cpu, memory_mb, pids, disk_mb, env, envs, metadata, on_timeout, network, volumes
        )
        # unasync: sync
        # return self._fork(body)
        # unasync: async
        return AwaitableContext(self._fork(body), _kill_forks)
        # unasync: end

    async def _fork(self, body: Dict[str, Any]) -> AsyncForkResult:
        d = await self._transport.request("POST", _path(self.id, "/fork"), json=body, wait=True)
        t = self._transport
        infos = [SandboxInfo.from_json(x) for x in d.get("sandboxes") or []]
        made: List[AsyncSandbox] = []
        try:
            for info in infos:
                # Each fork has its own connections, as a created sandbox does: closing one leaves the others.
                made.append(await type(self)._started(info, AsyncTransport(t.url, t.api_key, t.request_timeout)))
        except BaseException:
            # All or nothing: sandboxes the caller never gets must not linger.
            for sbx in made:
                await sbx.close()
            for info in infos:
                try:
                    await t.request("DELETE", _path(info.id))
                except SandboxError:
                    pass
            raise
        return AsyncForkResult(SnapshotInfo.from_json(d["snapshot"]), made)

    async def kill(self) -> bool:
        """Delete the sandbox and everything in it; False if it was already gone."""
        try:
            await self._transport.request("DELETE", _path(self.id))
        except NotFoundError:
            return False
        return True

    # -- network ---------------------------------------------------------------------------------------------

    def get_host(self, port: int) -> str:
        """E2B's name: the host of ``port``'s preview URL, ``{port}-{id}.{preview-domain}`` (no request made;
        the port stays private until :meth:`expose_port`)."""
        return host_of(self.id, port, self._info.preview_domain, self._transport.url)

    getHost = get_host

    async def expose_port(self, port: int, public: bool = False, *, expires_in: Optional[int] = None) -> ExposedPort:
        """Expose ``port``: its URL and a token for that port only (header ``X-Sandpit-Token``, or
        :attr:`ExposedPort.browser_url` in a browser). ``public=True`` opens it to anyone with the URL."""
        path = _path(self.id, f"/ports/{int(port)}")
        return ExposedPort.from_json(await self._transport.request("POST", path, json=expose_body(public, expires_in)))

    async def close_port(self, port: int) -> None:
        """Make ``port`` private again and revoke every token for it."""
        await self._transport.request("DELETE", _path(self.id, f"/ports/{int(port)}"))

    async def ports(self) -> List[ExposedPort]:
        """The exposed ports (tokens are only shown when created)."""
        return ports_of(await self._transport.request("GET", _path(self.id, "/ports")))

    async def get_network(self) -> NetworkPolicy:
        """The outbound network policy in force."""
        return dict(await self._transport.request("GET", _path(self.id, "/network")))

    async def logs(self, tail_bytes: Optional[int] = None) -> str:
        """The end of the sandbox agent's own log (at most ``tail_bytes``, default 64 KiB; the log lives
        inside the sandbox and is rotated at 1 MiB): what to read when a sandbox misbehaves."""
        params = {"tail_bytes": tail_bytes} if tail_bytes is not None else None
        async with self._transport.stream(_path(self.id, "/logs"), params=params) as resp:
            await resp.aread()
            return resp.text

    async def set_network(
        self,
        policy: Optional[NetworkPolicy] = None,
        *,
        egress: Optional[str] = None,
        allow_out: Optional[List[str]] = None,
        deny_out: Optional[List[str]] = None,
    ) -> NetworkPolicy:
        """Replace the policy while the sandbox runs; open connections it forbids are cut."""
        body = policy_body(policy, egress=egress, allow_out=allow_out, deny_out=deny_out)
        return dict(await self._transport.request("PUT", _path(self.id, "/network"), json=body))

    async def close(self) -> None:
        """Close this client's connections (the sandbox keeps running)."""
        await self._transport.aclose()

    async def __aenter__(self) -> AsyncSandbox:
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            await self.kill()
        except SandboxError:
            if exc_type is None:
                raise  # otherwise the block's own exception is the one that matters
        finally:
            await self.close()

    # -- microsandbox / Hyperbrowser spellings --------------------------------------------------------------

    async def exec(
        self,
        cmd: str,
        args: Optional[List[str]] = None,
        *,
        cwd: Optional[str] = None,
        env: Optional[Dict[str, str]] = None,
        envs: Optional[Dict[str, str]] = None,
        user: Optional[str] = None,
        run_as: Optional[str] = None,
        timeout: Optional[float] = None,
        timeout_ms: Optional[float] = None,
        stdin: Stdin = None,
    ) -> CommandResult:
        """Run a command and wait for it: ``exec("python3", ["-c", "print(1)"])`` runs a program with
        arguments (no shell); ``exec("pwd && echo $FOO", cwd="/tmp", env={"FOO": "bar"})`` runs a shell string.

        ``timeout`` is in seconds, ``timeout_ms`` in milliseconds (the process ends as ``timed_out``);
        ``run_as`` is an alias of ``user``; ``stdin`` bytes are given to the process, then EOF. A non-zero exit
        is a result, not an error.
        """
        body = start_body(
            cmd, args, cwd=cwd, env=env, envs=envs, user=user, run_as=run_as, timeout=timeout,
            timeout_in_ms=timeout_ms, stdin=stdin,
        )
        return await self._api.exec(body)

    async def exec_with(self, cmd: str, configure: Configure = None) -> CommandResult:
        """Run program ``cmd`` with options from a builder callback and wait::

            sbx.exec_with("python3", lambda e: e.args(["-c", "print(1)"]).cwd("/tmp").timeout(30_000))
        """
        options = _options(configure)
        if options.stdin == "pipe":
            raise ValueError("stdin_pipe() needs a streaming exec: use exec_stream_with()")
        return await self._api.exec(options.start_request(cmd))

    async def shell(self, script: str, **options: Any) -> CommandResult:
        """Run ``script`` with the sandbox's shell (``/bin/sh -c``) and wait; takes :meth:`exec`'s options."""
        return await self.exec(script, **options)

    async def exec_stream(
        self,
        cmd: str,
        args: Optional[List[str]] = None,
        *,
        cwd: Optional[str] = None,
        env: Optional[Dict[str, str]] = None,
        envs: Optional[Dict[str, str]] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = None,
        timeout_ms: Optional[float] = None,
        stdin: Stdin = None,
        tty: Any = None,
    ) -> AsyncExecHandle:
        """Start a command and return an :class:`AsyncExecHandle` streaming its events. As :meth:`exec`, ``args``
        given means program and arguments, else a shell string; ``stdin="pipe"`` enables ``take_stdin()``."""
        body = start_body(
            cmd, args, cwd=cwd, env=env, envs=envs, user=user, timeout=timeout, timeout_in_ms=timeout_ms,
            stdin=stdin, tty=tty,
        )
        return AsyncExecHandle(self._api, await self._api.start(body), stdin_pipe=stdin == "pipe")

    async def exec_stream_with(self, cmd: str, configure: Configure = None) -> AsyncExecHandle:
        """Streaming :meth:`exec_with`: program ``cmd`` with builder options, returning an :class:`AsyncExecHandle`."""
        options = _options(configure)
        info = await self._api.start(options.start_request(cmd))
        return AsyncExecHandle(self._api, info, stdin_pipe=options.stdin == "pipe")

    async def shell_stream(self, script: str, **options: Any) -> AsyncExecHandle:
        """Streaming :meth:`shell`: returns an :class:`AsyncExecHandle`."""
        return await self.exec_stream(script, **options)

    async def get_process(self, id: ProcessRef) -> AsyncProcessHandle:
        """The :class:`AsyncProcessHandle` of process ``id`` (string id or numeric pid)."""
        return await self.processes.get(id)

    # -- attach: a PTY bridged to the local terminal -----------------------------------------------------------

    async def attach(self, cmd: str, args: Optional[List[str]] = None) -> Optional[int]:
        """Run ``cmd`` on a PTY and bridge it to this terminal (raw mode, window resizes forwarded) until it
        exits; press ``ctrl-]`` to detach and leave it running. Returns the exit code, or ``None`` when
        detached. As with :meth:`exec`, ``args`` given means program and arguments, else a shell string."""
        return await self.attach_with(cmd, None, args=args)

    async def attach_shell(self) -> Optional[int]:
        """:meth:`attach` to the sandbox user's shell (``$SHELL``, else ``/bin/sh``)."""
        return await self.attach_with(DEFAULT_SHELL)

    async def attach_with(
        self, cmd: str, configure: AttachConfigure = None, *, args: Optional[List[str]] = None
    ) -> Optional[int]:
        """:meth:`attach` with options from a builder callback::

            sbx.attach_with("bash", lambda a: a.cwd("/app").env("EDITOR", "vim").detach_keys("ctrl-]"))
        """
        # unasync: sync
        # return attach_blocking(self._transport, self.id, cmd, args, attach_options(configure))
        # unasync: async
        return await attach_command(self._api, cmd, args, attach_options(configure))
        # unasync: end


@dataclasses.dataclass
class AsyncForkResult:
    # unasync: sync
    # """What :meth:`Sandbox.fork` made: the new sandboxes, running, and the snapshot they start from.
    #
    # ``with sbx.fork(2) as fork:`` kills the sandboxes when the block ends (and the daemon then deletes the
    # snapshot); otherwise kill them (:meth:`kill`) or each one.
    # """
    # unasync: async
    """What :meth:`AsyncSandbox.fork` made: the new sandboxes, running, and the snapshot they start from.

    ``async with sbx.fork(2) as fork:`` kills the sandboxes when the block ends (and the daemon then deletes the
    snapshot); otherwise kill them (:meth:`kill`) or each one.
    """
    # unasync: end

    #: The template the sandboxes start from (``auto_remove``: deleted with the last of them).
    snapshot: SnapshotInfo
    #: The new sandboxes, as :meth:`AsyncSandbox.create` returns them.
    sandboxes: List[AsyncSandbox]

    async def kill(self) -> List[bool]:
        """Kill every sandbox of the fork; for each, False if it was already gone."""
        return [await sbx.kill() for sbx in self.sandboxes]

    async def close(self) -> None:
        """Close every sandbox's connections (the sandboxes keep running)."""
        for sbx in self.sandboxes:
            await sbx.close()

    async def __aenter__(self) -> AsyncForkResult:
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        first: Optional[BaseException] = None
        for sbx in self.sandboxes:
            try:
                await sbx.__aexit__(exc_type, exc, tb)
            except SandboxError as err:
                first = first or err
        if first is not None:
            raise first
