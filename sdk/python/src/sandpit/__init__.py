"""sandpit: the Python SDK of the sandpit sandbox service.

``Sandbox`` (blocking) and ``AsyncSandbox`` (asyncio) create and drive sandboxes; every command API of the
hosted products sandpit reproduces is here in Python spelling: ``commands.run`` / ``spawn`` (Superserve,
Declaw), ``exec`` / ``exec_with`` / ``exec_stream`` / ``shell`` (microsandbox) and ``processes`` (Hyperbrowser).
"""

from ._async.commands import AsyncCommandHandle, AsyncCommands
from ._async.files import AsyncFiles
from ._async.audit import AsyncAudit
from ._async.keys import AsyncKeys
from ._async.observe import AsyncEvents, AsyncWebhooks
from ._async.tenants import AsyncTenants
from ._async.process import AsyncExecHandle, AsyncExecSink, AsyncProcesses, AsyncProcessHandle
from ._async.sandbox import AsyncForkResult, AsyncSandbox
from ._async.templates import AsyncTemplates
from ._async.volumes import AsyncVolumes
from ._async.watch import AsyncWatchHandle
from ._attach import AttachOptions, AttachOptionsBuilder
from ._awaitable import AwaitableContext
from ._client import DEFAULT_URL, error_from_response, resolve_api_key, resolve_url
from ._commands import CommandSession, SessionStdin
from ._errors import (
    AlreadyExistsError,
    AuthenticationError,
    IsADirError,
    NotADirError,
    NotEmptyError,
    PermissionDeniedError,
    CommandExitError,
    ConflictError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PayloadTooLargeError,
    ResourceExhaustedError,
    InsufficientStorageError,
    SandboxError,
    SandboxTimeoutError,
    StreamError,
    TemplateBuildError,
    UnavailableError,
)
from ._files import EntryInfo, FilesystemEvent, WriteEntry
from ._network import ExposedPort
from ._observe import verify_webhook
from ._options import ExecOptions, ExecOptionsBuilder
from ._sync.commands import CommandHandle, Commands
from ._sync.files import Files
from ._sync.audit import Audit
from ._sync.keys import Keys
from ._sync.observe import Events, Webhooks
from ._sync.tenants import Tenants
from ._sync.process import ExecHandle, ExecSink, Processes, ProcessHandle
from ._sync.sandbox import ForkResult, Sandbox
from ._sync.templates import Templates
from ._sync.volumes import Volumes
from ._sync.watch import WatchHandle
from ._types import (
    AuditEntry,
    AuditPage,
    EventPage,
    LifecycleEvent,
    MetricSample,
    Webhook,
    WebhookDelivery,
    CommandResult,
    CreatedKey,
    ExecEvent,
    ExecOutput,
    ExecResult,
    ExitStatus,
    KeyInfo,
    LostOutput,
    PoolInfo,
    ProcessInfo,
    ProcessList,
    ProcessResources,
    Rlimit,
    SandboxInfo,
    SignedUrl,
    SnapshotInfo,
    StreamEvent,
    TemplateBuild,
    TemplateInfo,
    TenantInfo,
    TenantQuotas,
    TenantUsage,
    VolumeInfo,
    VolumeMount,
    VolumeMountLike,
)

#: ``sandpit.TimeoutError`` is :class:`SandboxTimeoutError` (also a subclass of the built-in ``TimeoutError``).
TimeoutError = SandboxTimeoutError  # noqa: A001

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_URL",
    "AsyncKeys",
    "AsyncAudit",
    "Audit",
    "AuditEntry",
    "AuditPage",
    "AsyncEvents",
    "Events",
    "EventPage",
    "LifecycleEvent",
    "MetricSample",
    "AsyncWebhooks",
    "Webhooks",
    "Webhook",
    "WebhookDelivery",
    "verify_webhook",
    "SignedUrl",
    "AsyncTenants",
    "Tenants",
    "TenantInfo",
    "TenantQuotas",
    "TenantUsage",
    "AsyncTemplates",
    "Templates",
    "TemplateBuild",
    "TemplateBuildError",
    "TemplateInfo",
    "PoolInfo",
    "SnapshotInfo",
    "AsyncVolumes",
    "Volumes",
    "VolumeInfo",
    "VolumeMount",
    "VolumeMountLike",
    "AsyncForkResult",
    "ForkResult",
    "CreatedKey",
    "KeyInfo",
    "Keys",
    "AlreadyExistsError",
    "AsyncFiles",
    "AsyncWatchHandle",
    "EntryInfo",
    "Files",
    "FilesystemEvent",
    "IsADirError",
    "NotADirError",
    "NotEmptyError",
    "PermissionDeniedError",
    "WatchHandle",
    "WriteEntry",
    "AsyncCommandHandle",
    "AsyncCommands",
    "AsyncExecHandle",
    "AsyncExecSink",
    "AsyncProcessHandle",
    "AsyncProcesses",
    "AsyncSandbox",
    "AttachOptions",
    "AttachOptionsBuilder",
    "AuthenticationError",
    "AwaitableContext",
    "CommandExitError",
    "CommandHandle",
    "CommandResult",
    "CommandSession",
    "Commands",
    "ConflictError",
    "ExecEvent",
    "ExecHandle",
    "ExecOptions",
    "ExecOptionsBuilder",
    "ExecOutput",
    "ExecResult",
    "ExecSink",
    "ExposedPort",
    "ExitStatus",
    "InternalError",
    "InvalidArgumentError",
    "LostOutput",
    "NotFoundError",
    "PayloadTooLargeError",
    "ProcessHandle",
    "ProcessInfo",
    "ProcessList",
    "ProcessResources",
    "Processes",
    "ResourceExhaustedError",
    "InsufficientStorageError",
    "Rlimit",
    "Sandbox",
    "SandboxError",
    "SandboxInfo",
    "SandboxTimeoutError",
    "SessionStdin",
    "StreamError",
    "StreamEvent",
    "TimeoutError",
    "UnavailableError",
    "__version__",
    "error_from_response",
    "resolve_api_key",
    "resolve_url",
]
