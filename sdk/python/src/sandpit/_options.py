"""Request building: the ``StartRequest`` body, option spellings, and microsandbox's ``ExecOptionsBuilder``."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from ._types import Rlimit

__all__ = ["ExecOptions", "ExecOptionsBuilder", "Stdin", "build_start_request", "timeout_ms"]

#: Where a process's stdin comes from: ``"null"`` (``/dev/null``), ``"pipe"`` (written later) or these bytes.
Stdin = Union[str, bytes, None]
EnvLike = Union[Mapping[str, str], Iterable[Tuple[str, str]], None]
#: A terminal size ``(cols, rows)``, or ``True`` for 80x24.
TtyLike = Union[bool, Tuple[int, int], Mapping[str, int], None]


def timeout_ms(seconds: Optional[float] = None, ms: Optional[float] = None) -> int:
    """Combine the two timeout spellings (``timeout`` in seconds, ``timeout_ms`` in milliseconds) into
    milliseconds; 0 means none. ``ms`` wins when both are given."""
    if ms is not None:
        value = ms
    elif seconds is not None:
        value = seconds * 1000
    else:
        return 0
    if value < 0:
        raise ValueError("a timeout cannot be negative")
    return int(round(value))


def _env_dict(*sources: EnvLike) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for src in sources:
        if src is None:
            continue
        items = src.items() if isinstance(src, Mapping) else src
        for k, v in items:
            out[str(k)] = str(v)
    return out


def _stdin_json(stdin: Stdin) -> Any:
    if stdin is None or stdin == "null":
        return None
    if stdin == "pipe":
        return "pipe"
    if isinstance(stdin, (bytes, bytearray, memoryview)):
        return {"bytes_b64": base64.b64encode(bytes(stdin)).decode("ascii")}
    raise ValueError(f"stdin must be 'null', 'pipe' or bytes, not {stdin!r} (to send text, pass text.encode())")


def _tty_json(tty: TtyLike) -> Optional[Dict[str, int]]:
    if tty is None or tty is False:
        return None
    if tty is True:
        return {"cols": 80, "rows": 24}
    if isinstance(tty, Mapping):
        return {"cols": int(tty["cols"]), "rows": int(tty["rows"])}
    cols, rows = tty
    return {"cols": int(cols), "rows": int(rows)}


def build_start_request(
    *,
    cmd: Optional[str] = None,
    argv: Optional[List[str]] = None,
    cwd: Optional[str] = None,
    env: EnvLike = None,
    envs: EnvLike = None,
    user: Optional[str] = None,
    timeout_ms: int = 0,
    idle_timeout_ms: int = 0,
    stdin: Stdin = None,
    tty: TtyLike = None,
    rlimits: Optional[Iterable[Rlimit]] = None,
    id: Optional[str] = None,
) -> Dict[str, Any]:
    """The JSON body of ``POST /exec`` and ``POST /processes``. Exactly one of ``cmd`` (a shell string) and
    ``argv`` is required; ``env`` and ``envs`` are merged (``envs`` wins)."""
    if (cmd is None) == (argv is None):
        raise ValueError("give exactly one of cmd (a shell string) and argv (a program and its arguments)")
    body: Dict[str, Any] = {}
    if cmd is not None:
        body["cmd"] = cmd
    else:
        body["argv"] = [str(a) for a in argv or []]
        if not body["argv"]:
            raise ValueError("argv cannot be empty")
    if cwd is not None:
        body["cwd"] = cwd
    merged = _env_dict(env, envs)
    if merged:
        body["env"] = merged
    if user is not None:
        body["user"] = user
    if timeout_ms:
        body["timeout_ms"] = int(timeout_ms)
    if idle_timeout_ms:
        body["idle_timeout_ms"] = int(idle_timeout_ms)
    stdin_value = _stdin_json(stdin)
    if stdin_value is not None:
        body["stdin"] = stdin_value
    tty_value = _tty_json(tty)
    if tty_value is not None:
        body["tty"] = tty_value
    limits = [r.to_json() for r in rlimits or []]
    if limits:
        body["rlimits"] = limits
    if id is not None:
        body["id"] = id
    return body


@dataclass(frozen=True)
class ExecOptions:
    """The immutable options produced by :meth:`ExecOptionsBuilder.build` (microsandbox's ``ExecOptions``).

    ``timeout_ms`` is in milliseconds; ``stdin`` is ``"null"``, ``"pipe"`` or bytes; ``tty`` is a
    ``(cols, rows)`` size or ``None``.
    """

    args: Tuple[str, ...] = ()
    cwd: Optional[str] = None
    user: Optional[str] = None
    env: Tuple[Tuple[str, str], ...] = ()
    timeout_ms: Optional[int] = None
    stdin: Stdin = "null"
    tty: Optional[Tuple[int, int]] = None
    rlimits: Tuple[Rlimit, ...] = field(default=())

    def start_request(self, cmd: str) -> Dict[str, Any]:
        """The ``StartRequest`` body running program ``cmd`` with these options."""
        return build_start_request(
            argv=[cmd, *self.args],
            cwd=self.cwd,
            env=self.env,
            user=self.user,
            timeout_ms=self.timeout_ms or 0,
            stdin=self.stdin,
            tty=self.tty,
            rlimits=self.rlimits,
        )


class ExecOptionsBuilder:
    """Fluent builder for :meth:`Sandbox.exec_with` (microsandbox's ``ExecOptionsBuilder``); every setter
    returns the builder::

        sbx.exec_with("python3", lambda e: e.args(["script.py"]).cwd("/app").env("K", "V").timeout(30_000))
    """

    def __init__(self) -> None:
        self._args: List[str] = []
        self._cwd: Optional[str] = None
        self._user: Optional[str] = None
        self._env: Dict[str, str] = {}
        self._timeout_ms: Optional[int] = None
        self._stdin: Stdin = "null"
        self._tty: Optional[Tuple[int, int]] = None
        self._rlimits: List[Rlimit] = []

    def arg(self, arg: str) -> ExecOptionsBuilder:
        """Append one argument."""
        self._args.append(str(arg))
        return self

    def args(self, args: Iterable[str]) -> ExecOptionsBuilder:
        """Append several arguments."""
        self._args.extend(str(a) for a in args)
        return self

    def cwd(self, path: str) -> ExecOptionsBuilder:
        """Working directory (default: the user's home)."""
        self._cwd = path
        return self

    def user(self, user: str) -> ExecOptionsBuilder:
        """User to run as (a name or a numeric uid)."""
        self._user = user
        return self

    def env(self, key: str, value: str) -> ExecOptionsBuilder:
        """Add one environment variable (merged over the sandbox's)."""
        self._env[str(key)] = str(value)
        return self

    def envs(self, env: EnvLike) -> ExecOptionsBuilder:
        """Add many environment variables, from a mapping or ``(key, value)`` pairs."""
        self._env.update(_env_dict(env))
        return self

    def timeout(self, ms: int) -> ExecOptionsBuilder:
        """Kill the process after this many **milliseconds** (its status becomes ``timed_out``)."""
        self._timeout_ms = int(ms)
        return self

    def stdin_null(self) -> ExecOptionsBuilder:
        """Stdin reads from ``/dev/null`` (the default)."""
        self._stdin = "null"
        return self

    def stdin_pipe(self) -> ExecOptionsBuilder:
        """Open a stdin pipe, written through :meth:`ExecHandle.take_stdin` (streaming execs only)."""
        self._stdin = "pipe"
        return self

    def stdin_bytes(self, data: Union[bytes, str]) -> ExecOptionsBuilder:
        """Supply stdin up front (a string is UTF-8 encoded); the process reads EOF after it."""
        self._stdin = data.encode() if isinstance(data, str) else bytes(data)
        return self

    def tty(self, enabled: bool = True, cols: int = 80, rows: int = 24) -> ExecOptionsBuilder:
        """Allocate a pseudo-terminal (stderr is then merged into stdout)."""
        self._tty = (cols, rows) if enabled else None
        return self

    def rlimit(self, resource: str, limit: int) -> ExecOptionsBuilder:
        """Set both the soft and hard limit of ``resource`` (e.g. ``"nofile"``)."""
        self._rlimits.append(Rlimit(resource, int(limit), int(limit)))
        return self

    def rlimit_range(self, resource: str, soft: int, hard: int) -> ExecOptionsBuilder:
        """Set distinct soft and hard limits of ``resource``."""
        self._rlimits.append(Rlimit(resource, int(soft), int(hard)))
        return self

    def build(self) -> ExecOptions:
        """Freeze the options."""
        return ExecOptions(
            args=tuple(self._args),
            cwd=self._cwd,
            user=self._user,
            env=tuple(self._env.items()),
            timeout_ms=self._timeout_ms,
            stdin=self._stdin,
            tty=self._tty,
            rlimits=tuple(self._rlimits),
        )
