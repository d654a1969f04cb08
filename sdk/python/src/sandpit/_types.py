"""Plain data types: what the daemon answers, decoded into frozen dataclasses.

Field names follow the wire (snake_case). Unknown response fields are ignored (the compatibility rule of the
API), and every object keeps the JSON it was decoded from in ``raw``.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Dict, List, Literal, Mapping, Optional, Union

__all__ = [
    "CommandResult",
    "CreatedKey",
    "KeyInfo",
    "ExecEvent",
    "ExecOutput",
    "ExecResult",
    "ExitStatus",
    "LostOutput",
    "PoolInfo",
    "ProcessInfo",
    "ProcessList",
    "ProcessStatus",
    "Rlimit",
    "SandboxInfo",
    "SandboxState",
    "SnapshotInfo",
    "StreamEvent",
    "TemplateBuild",
    "TemplateBuildState",
    "TemplateInfo",
    "TemplateSource",
    "VolumeInfo",
    "VolumeMount",
    "VolumeMountLike",
    "parse_time",
]

#: Lifecycle states of a sandbox.
SandboxState = Literal["starting", "running", "paused", "stopped", "failed", "unhealthy"]
#: Lifecycle states of a process; the last four are final.
ProcessStatus = Literal["queued", "running", "exited", "failed", "killed", "timed_out"]
#: States of a template build; ``building`` until it ends ``ready`` or ``failed``.
TemplateBuildState = Literal["building", "ready", "failed"]
#: What a template is built from, one key: ``{"dir": path}``, ``{"tar": path}``, ``{"oci": path}`` (paths on the
#: daemon's host, under one of its ``--import-root`` directories) or ``{"debian": {"suite": ..., "mirror": ...}}``.
TemplateSource = Mapping[str, Any]

_FINAL = frozenset({"exited", "failed", "killed", "timed_out"})
_FRACTION = re.compile(r"\.(\d+)")


def parse_time(value: Optional[str]) -> Optional[datetime]:
    """Parse an RFC 3339 timestamp as the daemon writes it (``2026-01-02T03:04:05.678Z``); ``None`` stays ``None``.

    Works on Python 3.9, whose :meth:`datetime.fromisoformat` accepts neither ``Z`` nor every fraction length.
    """
    if not value:
        return None
    text = value.strip().replace("z", "Z")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    text = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
    return datetime.fromisoformat(text)


def _b64(text: Optional[str]) -> bytes:
    if not text:
        return b""
    try:
        return base64.b64decode(text)
    except (ValueError, TypeError):
        return b""


@dataclass(frozen=True)
class VolumeMount:
    """One volume in a sandbox: ``volumes=`` of ``Sandbox.create`` and ``fork`` (which also take the same as a
    plain dict, ``{"name": ..., "path": ..., "read_only": ...}``), and :attr:`SandboxInfo.volumes`."""

    #: The volume's name (``Volumes.create`` makes it).
    name: str
    #: Where it appears in the sandbox: an absolute, normalised path (made if missing), not ``/`` and not under
    #: ``/proc``, ``/sys``, ``/dev``, ``/run/sandpit`` or ``/.sandpit``.
    path: str
    #: Mounted read-only: a write to it fails inside the sandbox.
    read_only: bool = False

    def to_json(self) -> Dict[str, Any]:
        """The wire form (``read_only`` only when true, as the daemon writes it)."""
        d: Dict[str, Any] = {"name": self.name, "path": self.path}
        if self.read_only:
            d["read_only"] = True
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> VolumeMount:
        """Decode a ``VolumeMount`` JSON object."""
        return cls(name=str(d["name"]), path=str(d["path"]), read_only=bool(d.get("read_only", False)))


#: A mount as ``volumes=`` takes it: a :class:`VolumeMount`, or a mapping with its fields (sent as it is, so that
#: the daemon refuses a misspelt key rather than the SDK dropping it).
VolumeMountLike = Union[VolumeMount, Mapping[str, Any]]


@dataclass(frozen=True)
class SandboxInfo:
    """A sandbox as the daemon reports it (``GET /v1/sandboxes/{id}``)."""

    id: str
    state: str
    template: str
    cpu: Optional[float]
    memory_mb: Optional[int]
    pids: Optional[int]
    disk_mb: Optional[int]
    env: Dict[str, str]
    metadata: Dict[str, str]
    on_timeout: str
    created_at: Optional[datetime]
    expires_at: Optional[datetime]
    error: Optional[str] = None
    #: The outbound network policy in force (``egress`` filled in); None without networking.
    network: Optional[Dict[str, Any]] = None
    #: What follows ``{port}-{id}.`` in preview host names, e.g. ``localhost:7070``.
    preview_domain: Optional[str] = None
    #: The tenant of the key that created it (``default`` for the daemon's key file).
    tenant: str = "default"
    #: A credential for this sandbox only; in the answer to create (see ``rotate_access_token``).
    access_token: Optional[str] = field(default=None, repr=False)
    #: The volumes it mounts, as created (empty when none).
    volumes: List[VolumeMount] = field(default_factory=list)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def sandbox_id(self) -> str:
        """Alias of :attr:`id`."""
        return self.id

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SandboxInfo:
        """Decode a ``SandboxInfo`` JSON object."""
        return cls(
            id=str(d["id"]),
            state=str(d.get("state", "")),
            template=str(d.get("template", "")),
            cpu=d.get("cpu"),
            memory_mb=d.get("memory_mb"),
            pids=d.get("pids"),
            disk_mb=d.get("disk_mb"),
            env=dict(d.get("env") or {}),
            metadata=dict(d.get("metadata") or {}),
            on_timeout=str(d.get("on_timeout", "kill")),
            created_at=parse_time(d.get("created_at")),
            expires_at=parse_time(d.get("expires_at")),
            error=d.get("error"),
            network=d.get("network"),
            preview_domain=d.get("preview_domain"),
            tenant=str(d.get("tenant") or "default"),
            access_token=d.get("access_token"),
            volumes=[VolumeMount.from_json(x) for x in d.get("volumes") or []],
            raw=dict(d),
        )


@dataclass(frozen=True)
class ProcessResources:
    """CPU time and peak memory of an ended process."""

    cpu_user_ms: int
    cpu_system_ms: int
    max_rss_bytes: int
    """The largest resident set of the process or of one child it waited for."""

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ProcessResources:
        """Decode a ``ProcessResources`` JSON object."""
        return cls(
            cpu_user_ms=int(d.get("cpu_user_ms") or 0),
            cpu_system_ms=int(d.get("cpu_system_ms") or 0),
            max_rss_bytes=int(d.get("max_rss_bytes") or 0),
        )


@dataclass(frozen=True)
class ProcessInfo:
    """Everything known about one process in a sandbox (``GET /processes/{pid}``)."""

    id: str
    pid: Optional[int]
    cmd: str
    args: List[str]
    cwd: str
    user: str
    env: Dict[str, str]
    is_pty: bool
    status: str
    exit_code: Optional[int]
    signal: Optional[str]
    started_at: Optional[datetime]
    ended_at: Optional[datetime]
    error: Optional[str]
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    lost_bytes: int = 0
    last_seq: int = 0
    resources: Optional[ProcessResources] = None
    """What the process used, once it has ended (the kernel's account: it and the children it waited for)."""
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def envs(self) -> Dict[str, str]:
        """Alias of :attr:`env` (Declaw's spelling)."""
        return self.env

    @property
    def is_final(self) -> bool:
        """True once the process has ended (``exited``, ``failed``, ``killed`` or ``timed_out``)."""
        return self.status in _FINAL

    @property
    def is_running(self) -> bool:
        """True while the process is queued or running."""
        return not self.is_final

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ProcessInfo:
        """Decode a ``ProcessInfo`` JSON object (extra fields, e.g. an ``ExecResult``'s output, are ignored)."""
        return cls(
            id=str(d["id"]),
            pid=d.get("pid"),
            cmd=str(d.get("cmd", "")),
            args=list(d.get("args") or []),
            cwd=str(d.get("cwd", "")),
            user=str(d.get("user", "")),
            env=dict(d.get("env") or {}),
            is_pty=bool(d.get("is_pty", False)),
            status=str(d.get("status", "")),
            exit_code=d.get("exit_code"),
            signal=d.get("signal"),
            started_at=parse_time(d.get("started_at")),
            ended_at=parse_time(d.get("ended_at")),
            error=d.get("error"),
            stdout_bytes=int(d.get("stdout_bytes") or 0),
            stderr_bytes=int(d.get("stderr_bytes") or 0),
            lost_bytes=int(d.get("lost_bytes") or 0),
            last_seq=int(d.get("last_seq") or 0),
            resources=ProcessResources.from_json(d["resources"]) if d.get("resources") else None,
            raw=dict(d),
        )


class ProcessList(List[ProcessInfo]):
    """A list of :class:`ProcessInfo`, newest first. ``.data`` returns the list itself (Hyperbrowser's spelling:
    ``listing.data``)."""

    @property
    def data(self) -> List[ProcessInfo]:
        """The processes (this list)."""
        return self


@dataclass(frozen=True)
class ExitStatus:
    """How a process ended: its exit code and whether that is success (code 0)."""

    code: int
    success: bool


@dataclass(frozen=True)
class CommandResult:
    """The result of a finished command: its output and exit code, plus the final :class:`ProcessInfo`.

    The same type is returned by ``commands.run``, ``exec``, ``shell``, ``processes``' ``wait()`` and a
    session's ``wait()``; ``ExecResult`` and ``ExecOutput`` are aliases. A non-zero ``exit_code`` is a result,
    not an error.

    Attributes:
        stdout, stderr: the output decoded as UTF-8 (undecodable bytes replaced).
        exit_code: the shell convention: the code for ``exited``, 128+n when ended by signal n, 127 when the
            program was not found, 126 for other start failures.
        stdout_bytes, stderr_bytes: the raw output bytes.
        info: the process at its end (status, signal, error, times ...), when known.
    """

    stdout: str
    stderr: str
    exit_code: int
    stdout_bytes: bytes = field(default=b"", repr=False)
    stderr_bytes: bytes = field(default=b"", repr=False)
    info: Optional[ProcessInfo] = field(default=None, repr=False)

    @property
    def code(self) -> int:
        """Alias of :attr:`exit_code` (microsandbox's spelling)."""
        return self.exit_code

    @property
    def success(self) -> bool:
        """True when the exit code is 0."""
        return self.exit_code == 0

    @property
    def exit_status(self) -> ExitStatus:
        """The exit code and success flag as an :class:`ExitStatus`."""
        return ExitStatus(self.exit_code, self.exit_code == 0)

    @property
    def status(self) -> str:
        """The process's final status: ``exited``, ``failed``, ``killed`` or ``timed_out``."""
        if self.info is not None:
            return self.info.status
        return "exited"

    @property
    def error(self) -> Optional[str]:
        """Why the process failed to start or was timed out, when it did."""
        return self.info.error if self.info is not None else None

    @property
    def signal(self) -> Optional[str]:
        """The signal that ended the process (``"SIGKILL"``), if any."""
        return self.info.signal if self.info is not None else None

    @property
    def pid(self) -> Optional[int]:
        """The process's pid inside the sandbox."""
        return self.info.pid if self.info is not None else None

    @property
    def id(self) -> Optional[str]:
        """The process's string id."""
        return self.info.id if self.info is not None else None

    @classmethod
    def build(cls, info: ProcessInfo, stdout: bytes, stderr: bytes) -> CommandResult:
        """Assemble a result from a final :class:`ProcessInfo` and the collected output bytes."""
        code = info.exit_code
        if code is None:
            code = -1
        return cls(
            stdout=stdout.decode("utf-8", "replace"),
            stderr=stderr.decode("utf-8", "replace"),
            exit_code=code,
            stdout_bytes=stdout,
            stderr_bytes=stderr,
            info=info,
        )

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CommandResult:
        """Decode an ``ExecResult`` JSON object (``stdout``/``stderr`` text or ``*_b64`` bytes)."""
        out = d["stdout"].encode() if d.get("stdout") is not None else _b64(d.get("stdout_b64"))
        err = d["stderr"].encode() if d.get("stderr") is not None else _b64(d.get("stderr_b64"))
        return cls.build(ProcessInfo.from_json(d), out, err)


#: microsandbox's and Hyperbrowser's names for :class:`CommandResult`.
ExecResult = CommandResult
ExecOutput = CommandResult


@dataclass(frozen=True)
class LostOutput:
    """Output chunks ``from_seq..=to_seq`` (``bytes`` bytes in all) that the per-process cap dropped before
    this client read them."""

    from_seq: int
    to_seq: int
    bytes: int


@dataclass(frozen=True)
class ExecEvent:
    """One event of a process's output stream (microsandbox's ``ExecEvent``).

    ``kind`` is ``"started"`` (``pid`` and ``info`` set), ``"stdout"`` / ``"stderr"`` (``data`` bytes and
    ``seq``), ``"lost"`` (``lost`` set) or ``"exited"`` (``code`` and ``info`` set; always the last event).
    """

    kind: str
    data: bytes = b""
    seq: Optional[int] = None
    pid: Optional[int] = None
    code: Optional[int] = None
    info: Optional[ProcessInfo] = field(default=None, repr=False)
    lost: Optional[LostOutput] = None

    @property
    def text(self) -> str:
        """``data`` decoded as UTF-8 (chunks never split a character)."""
        return self.data.decode("utf-8", "replace")


@dataclass(frozen=True)
class StreamEvent:
    """One event of :meth:`ProcessHandle.stream` (Hyperbrowser's spelling).

    ``type`` is ``"started"``, ``"stdout"``, ``"stderr"`` (``data`` is the text chunk), ``"lost"`` or ``"exit"``
    (``result`` is the :class:`CommandResult`, with the output this stream saw).
    """

    type: str
    data: str = ""
    seq: Optional[int] = None
    result: Optional[CommandResult] = field(default=None, repr=False)


@dataclass(frozen=True)
class Rlimit:
    """A resource limit applied with ``setrlimit`` before exec; ``resource`` is e.g. ``"nofile"``, ``"nproc"``."""

    resource: str
    soft: int
    hard: Optional[int] = None

    def to_json(self) -> Dict[str, Any]:
        """The wire form."""
        d: Dict[str, Any] = {"resource": self.resource.lower().replace("rlimit_", ""), "soft": self.soft}
        if self.hard is not None:
            d["hard"] = self.hard
        return d


@dataclass(frozen=True)
class KeyInfo:
    """An API key as listed (``GET /v1/keys``): never its secret."""

    id: str
    name: str
    tenant: str
    #: Any of ``admin``, ``sandboxes``, ``read``.
    scopes: List[str]
    created_at: Optional[datetime]
    #: None for a key that does not expire.
    expires_at: Optional[datetime]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> KeyInfo:
        """Decode a ``KeyInfo`` JSON object."""
        return cls(
            id=str(d["id"]),
            name=str(d.get("name", "")),
            tenant=str(d.get("tenant", "")),
            scopes=[str(x) for x in d.get("scopes") or []],
            created_at=parse_time(d.get("created_at")),
            expires_at=parse_time(d.get("expires_at")),
        )


@dataclass(frozen=True)
class CreatedKey(KeyInfo):
    """The answer to ``POST /v1/keys``: the key's record and, this once, its secret (``key``)."""

    key: str = field(default="", repr=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CreatedKey:
        """Decode a ``CreatedKey`` JSON object."""
        info = KeyInfo.from_json(d)
        return cls(
            id=info.id,
            name=info.name,
            tenant=info.tenant,
            scopes=info.scopes,
            created_at=info.created_at,
            expires_at=info.expires_at,
            key=str(d["key"]),
        )


@dataclass(frozen=True)
class TenantQuotas:
    """A tenant's quotas (``PUT /v1/tenants/{name}``); ``None`` is no limit."""

    #: Sandboxes that may exist at once (``0`` stops the tenant creating any).
    max_sandboxes: Optional[int] = None
    #: Creates per second (a burst of ``max(1, floor(rate))``), may be fractional.
    max_creates_per_second: Optional[float] = None
    #: The sum of the tenant's sandboxes' ``memory_mb`` (under it, every create names ``memory_mb``).
    max_memory_mb: Optional[int] = None
    #: The sum of the tenant's sandboxes' ``disk_mb`` (1024 for one without).
    max_disk_mb: Optional[int] = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TenantQuotas:
        """Decode a ``TenantQuotas`` JSON object."""
        rate = d.get("max_creates_per_second")
        return cls(
            max_sandboxes=_opt_int(d.get("max_sandboxes")),
            max_creates_per_second=None if rate is None else float(rate),
            max_memory_mb=_opt_int(d.get("max_memory_mb")),
            max_disk_mb=_opt_int(d.get("max_disk_mb")),
        )

    def to_json(self) -> Dict[str, Any]:
        """The ``PUT`` body."""
        return {
            "max_sandboxes": self.max_sandboxes,
            "max_creates_per_second": self.max_creates_per_second,
            "max_memory_mb": self.max_memory_mb,
            "max_disk_mb": self.max_disk_mb,
        }


def _opt_int(v: Any) -> Optional[int]:
    return None if v is None else int(v)


@dataclass(frozen=True)
class TenantUsage:
    """What a tenant holds now, counted the way its quotas are."""

    sandboxes: int
    memory_mb: int
    disk_mb: int

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TenantUsage:
        """Decode a ``TenantUsage`` JSON object."""
        return cls(
            sandboxes=int(d.get("sandboxes", 0)),
            memory_mb=int(d.get("memory_mb", 0)),
            disk_mb=int(d.get("disk_mb", 0)),
        )


@dataclass(frozen=True)
class TenantInfo:
    """A tenant: its quotas and usage (``GET``/``PUT /v1/tenants/{name}``)."""

    name: str
    quotas: TenantQuotas
    usage: TenantUsage

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TenantInfo:
        """Decode a ``TenantInfo`` JSON object."""
        return cls(
            name=str(d["name"]),
            quotas=TenantQuotas.from_json(d.get("quotas") or {}),
            usage=TenantUsage.from_json(d.get("usage") or {}),
        )


@dataclass(frozen=True)
class AuditEntry:
    """One recorded call of the audit log (``GET /v1/audit``): never a secret."""

    id: int
    at: Optional[datetime]
    #: ``k_…``, ``file`` (the key file's key) or ``access-token:<sandbox id>``.
    key_id: str
    tenant: str
    #: ``sandbox.create``, ``process.exec``, ``file.write``, ``key.create``, ``tenant.quotas``, …
    action: str
    sandbox: Optional[str]
    #: The command line of an exec, the path of a file call, a key's id and scopes, a tenant's quotas.
    detail: Optional[str]
    status: int
    #: ``ok``, ``denied`` or ``failed``.
    outcome: str

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> AuditEntry:
        """Decode an ``AuditEntry`` JSON object."""
        return cls(
            id=int(d["id"]),
            at=parse_time(d.get("at")),
            key_id=str(d.get("key_id", "")),
            tenant=str(d.get("tenant", "")),
            action=str(d.get("action", "")),
            sandbox=d.get("sandbox"),
            detail=d.get("detail"),
            status=int(d.get("status", 0)),
            outcome=str(d.get("outcome", "")),
        )


@dataclass(frozen=True)
class AuditPage:
    """A page of the audit log, oldest first; ``next_after`` reads the next one when there are more."""

    entries: List[AuditEntry]
    next_after: Optional[int]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> AuditPage:
        """Decode an ``AuditList`` JSON object."""
        nxt = d.get("next_after")
        return cls(
            entries=[AuditEntry.from_json(x) for x in d.get("entries") or []],
            next_after=None if nxt is None else int(nxt),
        )


@dataclass(frozen=True)
class SignedUrl:
    """A signed file URL (``POST /v1/sandboxes/{id}/files/signed-url``): needs no other credential."""

    #: Absolute, built from the ``Host`` the daemon was reached by.
    url: str
    #: The same from ``/v1/`` on, for a client that reaches the daemon under another name.
    path: str
    #: ``GET`` (read; ``HEAD`` works too) or ``PUT`` (write).
    method: str
    expires_at: Optional[datetime]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SignedUrl:
        """Decode a ``SignedUrl`` JSON object."""
        return cls(
            url=str(d["url"]),
            path=str(d.get("path", "")),
            method=str(d.get("method", "")),
            expires_at=parse_time(d.get("expires_at")),
        )


@dataclass(frozen=True)
class TemplateInfo:
    """A template: a read-only root filesystem sandboxes start from (``GET /v1/templates/{name}``)."""

    name: str
    #: Where it came from: ``directory /srv/rootfs``, ``tarball …``, ``snapshot of sandbox …``.
    source: str
    created_at: Optional[datetime]
    #: The template a snapshot is a layer over (it stores only its own changes); ``None`` for a whole one.
    parent: Optional[str] = None
    #: The tenant owning a snapshot (only its keys and admin keys see it); ``None`` for a template every tenant uses.
    tenant: Optional[str] = None
    #: Made by a fork: the daemon deletes it with the last sandbox using it.
    auto_remove: bool = False

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TemplateInfo:
        """Decode a ``TemplateInfo`` JSON object."""
        return cls(
            name=str(d["name"]),
            source=str(d.get("source", "")),
            created_at=parse_time(d.get("created_at")),
            parent=d.get("parent"),
            tenant=d.get("tenant"),
            auto_remove=bool(d.get("auto_remove", False)),
        )


@dataclass(frozen=True)
class TemplateBuild:
    """Where a template build stands (``POST /v1/templates``, ``GET /v1/templates/{name}/build``)."""

    name: str
    #: What it is built from (a :data:`TemplateSource`: ``{"dir": ...}``, ``{"tar": ...}`` ...).
    source: Dict[str, Any]
    #: ``building``, then ``ready`` or ``failed``.
    state: str
    started_at: Optional[datetime]
    finished_at: Optional[datetime]
    #: Why the build failed.
    error: Optional[str]
    #: The last progress lines (import steps, debootstrap output), oldest first.
    log: List[str]
    #: The template, once ``ready``.
    template: Optional[TemplateInfo] = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TemplateBuild:
        """Decode a ``TemplateBuild`` JSON object."""
        template = d.get("template")
        return cls(
            name=str(d["name"]),
            source=dict(d.get("source") or {}),
            state=str(d.get("state", "")),
            started_at=parse_time(d.get("started_at")),
            finished_at=parse_time(d.get("finished_at")),
            error=d.get("error"),
            log=[str(x) for x in d.get("log") or []],
            template=None if template is None else TemplateInfo.from_json(template),
        )


@dataclass(frozen=True)
class SnapshotInfo:
    """What a snapshot made and cost (``POST /v1/sandboxes/{id}/snapshots``, and a fork's ``snapshot``)."""

    #: The new template, layered over the sandbox's: create sandboxes from it by name.
    template: TemplateInfo
    #: How long the sandbox's processes were frozen while the last changes were copied (0 if it was paused).
    frozen_ms: float
    #: Bytes of file content the snapshot holds (what the sandbox wrote over its template).
    bytes: int
    #: Files, directories and links it holds.
    entries: int

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SnapshotInfo:
        """Decode a ``SnapshotInfo`` JSON object."""
        return cls(
            template=TemplateInfo.from_json(d["template"]),
            frozen_ms=float(d.get("frozen_ms") or 0.0),
            bytes=int(d.get("bytes") or 0),
            entries=int(d.get("entries") or 0),
        )


@dataclass(frozen=True)
class PoolInfo:
    """A template's warm pool (``GET``/``PUT /v1/templates/{name}/pool``): sandboxes made ahead, waiting ready for a
    create of the template to take one."""

    template: str
    #: How many should wait (0: no pool).
    size: int
    #: How many wait now.
    ready: int
    #: How many are being made (the pool fills one at a time).
    filling: int

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PoolInfo:
        """Decode a ``PoolInfo`` JSON object."""
        return cls(
            template=str(d["template"]),
            size=int(d.get("size") or 0),
            ready=int(d.get("ready") or 0),
            filling=int(d.get("filling") or 0),
        )


@dataclass(frozen=True)
class VolumeInfo:
    """A volume: a named, size-capped filesystem that outlives sandboxes (``GET /v1/volumes/{name}``)."""

    name: str
    #: The size cap in MiB: a write past it fails inside the sandbox with "No space left on device".
    size_mb: int
    #: MiB in use (files and the filesystem's own metadata).
    used_mb: int
    #: The tenant it belongs to: only that tenant's keys (and admin keys) see and mount it.
    tenant: str
    created_at: Optional[datetime]
    #: Ids of the sandboxes that mount it now (it can be deleted only when this is empty).
    mounted_by: List[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> VolumeInfo:
        """Decode a ``VolumeInfo`` JSON object."""
        return cls(
            name=str(d["name"]),
            size_mb=int(d.get("size_mb") or 0),
            used_mb=int(d.get("used_mb") or 0),
            tenant=str(d.get("tenant", "")),
            created_at=parse_time(d.get("created_at")),
            mounted_by=[str(x) for x in d.get("mounted_by") or []],
        )


@dataclass(frozen=True)
class LifecycleEvent:
    """One lifecycle event of a sandbox (``GET /v1/events``): ``sandbox.created``, ``sandbox.paused``, …"""

    #: Increases across the daemon; ``after=`` reads on from here.
    id: int
    #: ``sandbox.created``, ``sandbox.paused``, ``sandbox.resumed``, ``sandbox.timeout_extended``,
    #: ``sandbox.timed_out``, ``sandbox.killed``, ``sandbox.failed``, ``sandbox.unhealthy``,
    #: ``sandbox.snapshot_created`` or ``sandbox.forked``.
    type: str
    sandbox_id: str
    tenant: str
    at: Optional[datetime]
    #: What happened, by type (``{"reason": "api"}`` for a pause by a call, …).
    data: Dict[str, Any]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> LifecycleEvent:
        """Decode a ``LifecycleEvent`` JSON object."""
        data = d.get("data")
        return cls(
            id=int(d["id"]),
            type=str(d.get("type", "")),
            sandbox_id=str(d.get("sandbox_id", "")),
            tenant=str(d.get("tenant", "")),
            at=parse_time(d.get("at")),
            data=dict(data) if isinstance(data, dict) else {},
        )


@dataclass(frozen=True)
class EventPage:
    """A page of lifecycle events, oldest first; ``next_after`` reads the next one when there are more."""

    events: List[LifecycleEvent]
    next_after: Optional[int]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> EventPage:
        """Decode an ``EventList`` JSON object."""
        nxt = d.get("next_after")
        return cls(
            events=[LifecycleEvent.from_json(x) for x in d.get("events") or []],
            next_after=None if nxt is None else int(nxt),
        )


@dataclass(frozen=True)
class MetricSample:
    """One resource sample of a sandbox (``GET /v1/sandboxes/{id}/metrics``)."""

    timestamp: Optional[datetime]
    #: CPU used since the previous sample, in percent of ONE cpu (100: one cpu busy).
    cpu_used_pct: float
    #: The sandbox's cpu limit, or the host's cpus without one.
    cpu_count: float
    mem_used: int
    #: 0: no limit.
    mem_limit: int
    disk_used: int
    disk_limit: int
    pids: int

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> MetricSample:
        """Decode a ``MetricSample`` JSON object."""
        return cls(
            timestamp=parse_time(d.get("timestamp")),
            cpu_used_pct=float(d.get("cpu_used_pct") or 0.0),
            cpu_count=float(d.get("cpu_count") or 0.0),
            mem_used=int(d.get("mem_used") or 0),
            mem_limit=int(d.get("mem_limit") or 0),
            disk_used=int(d.get("disk_used") or 0),
            disk_limit=int(d.get("disk_limit") or 0),
            pids=int(d.get("pids") or 0),
        )


@dataclass(frozen=True)
class Webhook:
    """A webhook (``/v1/webhooks``); its secret is never shown."""

    id: str
    url: str
    events: List[str]
    description: Optional[str]
    created_at: Optional[datetime]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Webhook:
        """Decode a ``Webhook`` JSON object."""
        return cls(
            id=str(d["id"]),
            url=str(d.get("url", "")),
            events=[str(e) for e in d.get("events") or []],
            description=d.get("description"),
            created_at=parse_time(d.get("created_at")),
        )


@dataclass(frozen=True)
class WebhookDelivery:
    """One attempt at delivering one event to a webhook."""

    #: ``whd_…``: the same for every attempt at one event (sent as ``Sandpit-Delivery``).
    id: str
    event_id: int
    event_type: str
    attempt: int
    at: Optional[datetime]
    #: ``delivered``, ``retrying`` or ``failed``.
    outcome: str
    status_code: Optional[int]
    error: Optional[str]
    duration_ms: int

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> WebhookDelivery:
        """Decode a ``WebhookDelivery`` JSON object."""
        return cls(
            id=str(d["id"]),
            event_id=int(d.get("event_id") or 0),
            event_type=str(d.get("event_type", "")),
            attempt=int(d.get("attempt") or 0),
            at=parse_time(d.get("at")),
            outcome=str(d.get("outcome", "")),
            status_code=d.get("status_code"),
            error=d.get("error"),
            duration_ms=int(d.get("duration_ms") or 0),
        )
