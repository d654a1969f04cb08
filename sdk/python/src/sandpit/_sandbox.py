"""``Sandbox`` (blocking) and ``AsyncSandbox`` (asyncio): the sandbox lifecycle plus every way to run commands."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Dict, List, Optional, Tuple, Union
from urllib.parse import quote

from ._attach import DEFAULT_SHELL, AttachConfigure, AttachOptions, attach, attach_options
from ._awaitable import AwaitableContext
from ._client import AsyncTransport, SyncTransport
from ._files import AsyncFiles, Files
from ._commands import AsyncCommands, Commands
from ._errors import NotFoundError, SandboxError
from ._options import ExecOptions, ExecOptionsBuilder, Stdin
from ._process import (
    AsyncExecHandle,
    AsyncProcessApi,
    AsyncProcesses,
    AsyncProcessHandle,
    ExecHandle,
    ProcessApi,
    ProcessHandle,
    ProcessRef,
    Processes,
    start_body,
)
from ._network import ExposedPort, NetworkPolicy, expose_body, host_of, policy_body, ports_of
from ._types import CommandResult, SandboxInfo

__all__ = ["AsyncSandbox", "Sandbox"]

#: ``exec_with``'s configuration: a builder callback, or options built already.
Configure = Union[Callable[[ExecOptionsBuilder], ExecOptionsBuilder], ExecOptions, None]
_START_WAIT_S = 60.0


def _options(configure: Configure) -> ExecOptions:
    if configure is None:
        return ExecOptions()
    if isinstance(configure, ExecOptions):
        return configure
    built = configure(ExecOptionsBuilder())
    if not isinstance(built, ExecOptionsBuilder):
        raise TypeError("the exec_with callback must return the builder it was given")
    return built.build()


def _create_body(
    template: Optional[str],
    timeout: Optional[int],
    cpu: Optional[float],
    memory_mb: Optional[int],
    pids: Optional[int],
    disk_mb: Optional[int],
    env: Optional[Dict[str, str]],
    envs: Optional[Dict[str, str]],
    metadata: Optional[Dict[str, str]],
    on_timeout: Optional[str],
    network: Optional[NetworkPolicy] = None,
) -> Dict[str, Any]:
    body: Dict[str, Any] = {}
    for key, value in (
        ("template", template),
        ("timeout", None if timeout is None else int(timeout)),
        ("cpu", cpu),
        ("memory_mb", memory_mb),
        ("pids", pids),
        ("disk_mb", disk_mb),
        ("on_timeout", on_timeout),
    ):
        if value is not None:
            body[key] = value
    merged = {**(env or {}), **(envs or {})}
    if merged:
        body["env"] = merged
    if metadata:
        body["metadata"] = dict(metadata)
    if network is not None:
        body["network"] = policy_body(network)
    return body


def _list_params(state: Optional[str], metadata: Optional[Dict[str, str]]) -> List[Tuple[str, str]]:
    params: List[Tuple[str, str]] = []
    if state is not None:
        params.append(("state", state))
    for k, v in (metadata or {}).items():
        params.append(("metadata", f"{k}={v}"))
    return params


def _path(sandbox_id: str, tail: str = "") -> str:
    return f"/v1/sandboxes/{quote(sandbox_id, safe='')}{tail}"


class Sandbox:
    """A sandbox, driven with blocking calls.

    Create one with :meth:`create` (``with Sandbox.create() as sbx:`` kills it when the block ends) or attach
    to an existing one with :meth:`connect`. The daemon's URL and key come from the ``url``/``api_key``
    arguments, else ``SANDPIT_URL``/``SANDPIT_API_KEY``, else the local daemon and its key file.

    Attributes:
        commands: Superserve's and Declaw's command API (:class:`~sandpit.Commands`).
        processes: Hyperbrowser's process API (:class:`~sandpit.Processes`).
        files: the files API with E2B's names (:class:`~sandpit.Files`).
    """

    def __init__(self, info: SandboxInfo, transport: SyncTransport) -> None:
        self._info = info
        self._transport = transport
        self._api = ProcessApi(transport, info.id)
        self.commands = Commands(self._api)
        self.processes = Processes(self._api)
        self.files = Files(transport, info.id)

    def __repr__(self) -> str:
        return f"Sandbox(id={self.id!r}, state={self._info.state!r})"

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
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> Sandbox:
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
            url, api_key: the daemon; default from the environment (see the class docs).
            request_timeout: seconds for ordinary HTTP requests (default 30).
        """
        transport = SyncTransport(url, api_key, request_timeout)
        try:
            body = _create_body(
                template, timeout, cpu, memory_mb, pids, disk_mb, env, envs, metadata, on_timeout, network
            )
            info = SandboxInfo.from_json(transport.request("POST", "/v1/sandboxes", json=body))
            deadline = time.monotonic() + _START_WAIT_S
            while info.state == "starting" and time.monotonic() < deadline:
                time.sleep(0.1)
                info = SandboxInfo.from_json(transport.request("GET", _path(info.id)))
        except BaseException:
            transport.close()
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
    ) -> Sandbox:
        """Attach to an existing sandbox, resuming it if it is paused. :class:`NotFoundError` if it is gone."""
        transport = SyncTransport(url, api_key, request_timeout)
        try:
            info = SandboxInfo.from_json(transport.request("POST", _path(sandbox_id, "/connect")))
        except BaseException:
            transport.close()
            raise
        return cls(info, transport)

    @classmethod
    def list(
        cls,
        *,
        state: Optional[str] = None,
        metadata: Optional[Dict[str, str]] = None,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
    ) -> List[SandboxInfo]:
        """The daemon's sandboxes, optionally only those in ``state`` and whose metadata has every given pair."""
        transport = SyncTransport(url, api_key)
        try:
            d = transport.request("GET", "/v1/sandboxes", params=_list_params(state, metadata))
        finally:
            transport.close()
        return [SandboxInfo.from_json(x) for x in d.get("sandboxes", [])]

    def info(self) -> SandboxInfo:
        """The sandbox's current state, limits, metadata and deadline."""
        self._info = SandboxInfo.from_json(self._transport.request("GET", _path(self.id)))
        return self._info

    get_info = info

    def is_running(self) -> bool:
        """True while the sandbox exists and is ``running``."""
        try:
            return self.info().state == "running"
        except NotFoundError:
            return False

    def pause(self) -> SandboxInfo:
        """Freeze every process of the sandbox. Any later call on it resumes it first."""
        self._info = SandboxInfo.from_json(self._transport.request("POST", _path(self.id, "/pause")))
        return self._info

    def resume(self) -> SandboxInfo:
        """Thaw a paused sandbox."""
        self._info = SandboxInfo.from_json(self._transport.request("POST", _path(self.id, "/resume")))
        return self._info

    def set_timeout(self, timeout: int) -> SandboxInfo:
        """Move the sandbox's deadline to ``timeout`` seconds from now."""
        d = self._transport.request("POST", _path(self.id, "/timeout"), json={"timeout": int(timeout)})
        self._info = SandboxInfo.from_json(d)
        return self._info

    def kill(self) -> bool:
        """Delete the sandbox and everything in it; False if it was already gone."""
        try:
            self._transport.request("DELETE", _path(self.id))
        except NotFoundError:
            return False
        return True

    # -- network ---------------------------------------------------------------------------------------------

    def get_host(self, port: int) -> str:
        """E2B's name: the host of ``port``'s preview URL, ``{port}-{id}.{preview-domain}`` (no request made;
        the port stays private until :meth:`expose_port`)."""
        return host_of(self.id, port, self._info.preview_domain, self._transport.url)

    getHost = get_host

    def expose_port(self, port: int, public: bool = False, *, expires_in: Optional[int] = None) -> ExposedPort:
        """Expose ``port``: its URL and a token for that port only (header ``X-Sandpit-Token``, or
        :attr:`ExposedPort.browser_url` in a browser). ``public=True`` opens it to anyone with the URL."""
        d = self._transport.request("POST", _path(self.id, f"/ports/{int(port)}"), json=expose_body(public, expires_in))
        return ExposedPort.from_json(d)

    def close_port(self, port: int) -> None:
        """Make ``port`` private again and revoke every token for it."""
        self._transport.request("DELETE", _path(self.id, f"/ports/{int(port)}"))

    def ports(self) -> List[ExposedPort]:
        """The exposed ports (tokens are only shown when created)."""
        return ports_of(self._transport.request("GET", _path(self.id, "/ports")))

    def get_network(self) -> NetworkPolicy:
        """The outbound network policy in force."""
        return dict(self._transport.request("GET", _path(self.id, "/network")))

    def logs(self, tail_bytes: Optional[int] = None) -> str:
        """The end of the sandbox agent's own log (at most ``tail_bytes``, default 64 KiB; the log lives
        inside the sandbox and is rotated at 1 MiB): what to read when a sandbox misbehaves."""
        params = {"tail_bytes": tail_bytes} if tail_bytes is not None else None
        with self._transport.stream(_path(self.id, "/logs"), params=params) as resp:
            resp.read()
            return resp.text

    def set_network(
        self,
        policy: Optional[NetworkPolicy] = None,
        *,
        egress: Optional[str] = None,
        allow_out: Optional[List[str]] = None,
        deny_out: Optional[List[str]] = None,
    ) -> NetworkPolicy:
        """Replace the policy while the sandbox runs; open connections it forbids are cut."""
        body = policy_body(policy, egress=egress, allow_out=allow_out, deny_out=deny_out)
        return dict(self._transport.request("PUT", _path(self.id, "/network"), json=body))

    def close(self) -> None:
        """Close this client's connections (the sandbox keeps running)."""
        self._transport.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self.kill()
        except SandboxError:
            if exc_type is None:
                raise  # otherwise the block's own exception is the one that matters
        finally:
            self.close()

    # -- microsandbox / Hyperbrowser spellings --------------------------------------------------------------

    def exec(
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
        return self._api.exec(body)

    def exec_with(self, cmd: str, configure: Configure = None) -> CommandResult:
        """Run program ``cmd`` with options from a builder callback and wait::

            sbx.exec_with("python3", lambda e: e.args(["-c", "print(1)"]).cwd("/tmp").timeout(30_000))
        """
        options = _options(configure)
        if options.stdin == "pipe":
            raise ValueError("stdin_pipe() needs a streaming exec: use exec_stream_with()")
        return self._api.exec(options.start_request(cmd))

    def shell(self, script: str, **options: Any) -> CommandResult:
        """Run ``script`` with the sandbox's shell (``/bin/sh -c``) and wait; takes :meth:`exec`'s options."""
        return self.exec(script, **options)

    def exec_stream(
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
    ) -> ExecHandle:
        """Start a command and return an :class:`ExecHandle` streaming its events. As :meth:`exec`, ``args``
        given means program and arguments, else a shell string; ``stdin="pipe"`` enables ``take_stdin()``."""
        body = start_body(
            cmd, args, cwd=cwd, env=env, envs=envs, user=user, timeout=timeout, timeout_in_ms=timeout_ms,
            stdin=stdin, tty=tty,
        )
        return ExecHandle(self._api, self._api.start(body), stdin_pipe=stdin == "pipe")

    def exec_stream_with(self, cmd: str, configure: Configure = None) -> ExecHandle:
        """Streaming :meth:`exec_with`: program ``cmd`` with builder options, returning an :class:`ExecHandle`."""
        options = _options(configure)
        return ExecHandle(self._api, self._api.start(options.start_request(cmd)), stdin_pipe=options.stdin == "pipe")

    def shell_stream(self, script: str, **options: Any) -> ExecHandle:
        """Streaming :meth:`shell`: returns an :class:`ExecHandle`."""
        return self.exec_stream(script, **options)

    def get_process(self, id: ProcessRef) -> ProcessHandle:
        """The :class:`ProcessHandle` of process ``id`` (string id or numeric pid)."""
        return self.processes.get(id)

    # -- attach: a PTY bridged to the local terminal -----------------------------------------------------------

    def attach(self, cmd: str, args: Optional[List[str]] = None) -> Optional[int]:
        """Run ``cmd`` on a PTY and bridge it to this terminal (raw mode, window resizes forwarded) until it
        exits; press ``ctrl-]`` to detach and leave it running. Returns the exit code, or ``None`` when
        detached. As with :meth:`exec`, ``args`` given means program and arguments, else a shell string."""
        return self.attach_with(cmd, None, args=args)

    def attach_shell(self) -> Optional[int]:
        """:meth:`attach` to the sandbox user's shell (``$SHELL``, else ``/bin/sh``)."""
        return self.attach_with(DEFAULT_SHELL)

    def attach_with(
        self, cmd: str, configure: AttachConfigure = None, *, args: Optional[List[str]] = None
    ) -> Optional[int]:
        """:meth:`attach` with options from a builder callback::

            sbx.attach_with("bash", lambda a: a.cwd("/app").env("EDITOR", "vim").detach_keys("ctrl-]"))
        """
        options = attach_options(configure)

        async def run() -> Optional[int]:
            transport = AsyncTransport(self._transport.url, self._transport.api_key, self._transport.request_timeout)
            try:
                return await _attach_on(AsyncProcessApi(transport, self.id), cmd, args, options)
            finally:
                await transport.aclose()

        return asyncio.run(run())


async def _attach_on(
    api: AsyncProcessApi, cmd: str, args: Optional[List[str]], options: AttachOptions
) -> Optional[int]:
    all_args = [*(args or []), *options.args]
    if args is None and not options.args:
        return await attach(api, cmd, None, options)
    return await attach(api, None, [cmd, *all_args], options)


async def _close_and_kill(sbx: AsyncSandbox) -> None:
    await sbx.__aexit__(None, None, None)


class AsyncSandbox:
    """A sandbox driven with asyncio; the same surface as :class:`Sandbox` with ``await``, plus
    ``commands.spawn`` (interactive WebSocket sessions).

    ``sbx = await AsyncSandbox.create()`` or ``async with AsyncSandbox.create() as sbx:`` (which kills the
    sandbox when the block ends).
    """

    def __init__(self, info: SandboxInfo, transport: AsyncTransport) -> None:
        self._info = info
        self._transport = transport
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
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> AwaitableContext[AsyncSandbox]:
        """Create a sandbox; see :meth:`Sandbox.create`. Await it, or use it in ``async with``."""
        body = _create_body(
            template, timeout, cpu, memory_mb, pids, disk_mb, env, envs, metadata, on_timeout, network
        )
        return AwaitableContext(cls._create(body, url, api_key, request_timeout), _close_and_kill)

    @classmethod
    async def _create(
        cls, body: Dict[str, Any], url: Optional[str], api_key: Optional[str], request_timeout: Optional[float]
    ) -> AsyncSandbox:
        transport = AsyncTransport(url, api_key, request_timeout)
        try:
            info = SandboxInfo.from_json(await transport.request("POST", "/v1/sandboxes", json=body))
            deadline = time.monotonic() + _START_WAIT_S
            while info.state == "starting" and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                info = SandboxInfo.from_json(await transport.request("GET", _path(info.id)))
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
        """Attach to an existing sandbox, resuming it if paused; see :meth:`Sandbox.connect`. Await it, or use
        it in ``async with`` (which kills the sandbox when the block ends, as with :meth:`create`)."""
        return AwaitableContext(cls._connect(sandbox_id, url, api_key, request_timeout), _close_and_kill)

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
    async def list(
        cls,
        *,
        state: Optional[str] = None,
        metadata: Optional[Dict[str, str]] = None,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
    ) -> List[SandboxInfo]:
        """The daemon's sandboxes; see :meth:`Sandbox.list`."""
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
        """Freeze every process of the sandbox."""
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

    def get_host(self, port: int) -> str:
        """See :meth:`Sandbox.get_host`."""
        return host_of(self.id, port, self._info.preview_domain, self._transport.url)

    getHost = get_host

    async def expose_port(self, port: int, public: bool = False, *, expires_in: Optional[int] = None) -> ExposedPort:
        """See :meth:`Sandbox.expose_port`."""
        d = await self._transport.request(
            "POST", _path(self.id, f"/ports/{int(port)}"), json=expose_body(public, expires_in)
        )
        return ExposedPort.from_json(d)

    async def close_port(self, port: int) -> None:
        """See :meth:`Sandbox.close_port`."""
        await self._transport.request("DELETE", _path(self.id, f"/ports/{int(port)}"))

    async def ports(self) -> List[ExposedPort]:
        """See :meth:`Sandbox.ports`."""
        return ports_of(await self._transport.request("GET", _path(self.id, "/ports")))

    async def get_network(self) -> NetworkPolicy:
        """See :meth:`Sandbox.get_network`."""
        return dict(await self._transport.request("GET", _path(self.id, "/network")))

    async def logs(self, tail_bytes: Optional[int] = None) -> str:
        """See :meth:`Sandbox.logs`."""
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
        """See :meth:`Sandbox.set_network`."""
        body = policy_body(policy, egress=egress, allow_out=allow_out, deny_out=deny_out)
        return dict(await self._transport.request("PUT", _path(self.id, "/network"), json=body))

    async def kill(self) -> bool:
        """Delete the sandbox and everything in it; False if it was already gone."""
        try:
            await self._transport.request("DELETE", _path(self.id))
        except NotFoundError:
            return False
        return True

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
        """Run a command and wait for it; see :meth:`Sandbox.exec`."""
        body = start_body(
            cmd, args, cwd=cwd, env=env, envs=envs, user=user, run_as=run_as, timeout=timeout,
            timeout_in_ms=timeout_ms, stdin=stdin,
        )
        return await self._api.exec(body)

    async def exec_with(self, cmd: str, configure: Configure = None) -> CommandResult:
        """Run program ``cmd`` with builder options and wait; see :meth:`Sandbox.exec_with`."""
        options = _options(configure)
        if options.stdin == "pipe":
            raise ValueError("stdin_pipe() needs a streaming exec: use exec_stream_with()")
        return await self._api.exec(options.start_request(cmd))

    async def shell(self, script: str, **options: Any) -> CommandResult:
        """Run ``script`` with ``/bin/sh -c`` and wait."""
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
        """Start a command and return an :class:`AsyncExecHandle` (``async for event in handle``)."""
        body = start_body(
            cmd, args, cwd=cwd, env=env, envs=envs, user=user, timeout=timeout, timeout_in_ms=timeout_ms,
            stdin=stdin, tty=tty,
        )
        return AsyncExecHandle(self._api, await self._api.start(body), stdin_pipe=stdin == "pipe")

    async def exec_stream_with(self, cmd: str, configure: Configure = None) -> AsyncExecHandle:
        """Streaming :meth:`exec_with`."""
        options = _options(configure)
        info = await self._api.start(options.start_request(cmd))
        return AsyncExecHandle(self._api, info, stdin_pipe=options.stdin == "pipe")

    async def shell_stream(self, script: str, **options: Any) -> AsyncExecHandle:
        """Streaming :meth:`shell`."""
        return await self.exec_stream(script, **options)

    async def get_process(self, id: ProcessRef) -> AsyncProcessHandle:
        """The :class:`AsyncProcessHandle` of process ``id``."""
        return await self.processes.get(id)

    async def attach(self, cmd: str, args: Optional[List[str]] = None) -> Optional[int]:
        """Bridge a PTY process to this terminal; see :meth:`Sandbox.attach`."""
        return await _attach_on(self._api, cmd, args, attach_options(None))

    async def attach_shell(self) -> Optional[int]:
        """Attach to the sandbox user's shell; see :meth:`Sandbox.attach_shell`."""
        return await _attach_on(self._api, DEFAULT_SHELL, None, attach_options(None))

    async def attach_with(
        self, cmd: str, configure: AttachConfigure = None, *, args: Optional[List[str]] = None
    ) -> Optional[int]:
        """Attach with builder options; see :meth:`Sandbox.attach_with`."""
        return await _attach_on(self._api, cmd, args, attach_options(configure))
