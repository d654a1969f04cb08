"""Exceptions raised by the sandpit SDK.

Every error the daemon reports carries a stable machine-readable ``code`` and a human ``message``; the SDK
raises the subclass of :class:`SandboxError` that matches the code (see :func:`error_from_response`).
"""

from __future__ import annotations

import builtins
import json
from typing import TYPE_CHECKING, Dict, Mapping, Optional, Type, Union

if TYPE_CHECKING:  # pragma: no cover
    from ._types import CommandResult, TemplateBuild

__all__ = [
    "AuthenticationError",
    "CommandExitError",
    "ConflictError",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "PayloadTooLargeError",
    "ResourceExhaustedError",
    "InsufficientStorageError",
    "AlreadyExistsError",
    "IsADirError",
    "NotADirError",
    "NotEmptyError",
    "PermissionDeniedError",
    "SandboxError",
    "SandboxTimeoutError",
    "StreamError",
    "TemplateBuildError",
    "UnavailableError",
    "error_from_response",
]


class SandboxError(Exception):
    """Base class of every sandpit error.

    Attributes:
        code: the server's error code (``"not_found"``, ``"conflict"`` ...), or an SDK-side code such as
            ``"stream_cut"`` or ``"command_exit"``.
        message: the server's sentence for a person.
        status_code: the HTTP status, when the error came from an HTTP answer.
        retry_after: the server's ``Retry-After`` in seconds, when it sent one.
    """

    default_code = "unknown"

    def __init__(self, message: str, *, code: Optional[str] = None, status_code: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.status_code = status_code
        #: The server's ``Retry-After`` in seconds, when it sent one (a 429 over a tenant quota or rate, a 503).
        self.retry_after: Optional[int] = None

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, status_code={self.status_code!r})"


class InvalidArgumentError(SandboxError):
    """The request was malformed: bad JSON, an unknown field, a value out of range (HTTP 400)."""

    default_code = "invalid_argument"


class AuthenticationError(SandboxError):
    """The API key is missing or wrong (HTTP 401)."""

    default_code = "unauthenticated"


class NotFoundError(SandboxError):
    """No such sandbox, process, template or volume (HTTP 404), e.g. the sandbox was deleted."""

    default_code = "not_found"


class ConflictError(SandboxError):
    """The request conflicts with the current state (HTTP 409): an impossible state transition, stdin that is
    not a pipe or already closed, a signal to a process that has ended, a name taken, a template or volume in
    use."""

    default_code = "conflict"


class SandboxTimeoutError(SandboxError, builtins.TimeoutError):
    """A deadline passed: a long-poll gave up (HTTP 408), a command ran past its ``timeout`` (its status is
    ``timed_out``), or an HTTP request timed out. Also exported as ``sandpit.TimeoutError``; it is a subclass of
    the built-in :class:`TimeoutError` too.

    Attributes:
        result: the command's result when a command timed out, else ``None``.
    """

    default_code = "timeout"

    def __init__(
        self,
        message: str,
        *,
        code: Optional[str] = None,
        status_code: Optional[int] = None,
        result: Optional[CommandResult] = None,
    ) -> None:
        SandboxError.__init__(self, message, code=code, status_code=status_code)
        self.result = result

    def __str__(self) -> str:
        return SandboxError.__str__(self)


class PermissionDeniedError(SandboxError):
    """The sandbox user may not do this (HTTP 403): file permissions, a read-only file system."""

    default_code = "permission_denied"


class AlreadyExistsError(ConflictError):
    """The path exists already (HTTP 409 ``already_exists``)."""

    default_code = "already_exists"


class NotEmptyError(ConflictError):
    """The directory is not empty (HTTP 409 ``not_empty``): remove it recursively."""

    default_code = "not_empty"


class IsADirError(ConflictError):
    """A directory where a file was needed (HTTP 409 ``is_a_directory``)."""

    default_code = "is_a_directory"


class NotADirError(ConflictError):
    """A file where a directory was needed (HTTP 409 ``not_a_directory``)."""

    default_code = "not_a_directory"


class PayloadTooLargeError(SandboxError):
    """The request body is larger than the server accepts (HTTP 413)."""

    default_code = "payload_too_large"


class ResourceExhaustedError(SandboxError):
    """Too many sandboxes or processes, or over a tenant quota (HTTP 429; ``code`` says which:
    ``resource_exhausted``, ``quota_exceeded`` or ``rate_limited``)."""

    default_code = "resource_exhausted"


class UnavailableError(SandboxError):
    """What should serve the call cannot be reached (HTTP 503, or a connection failure): the sandbox's agent, the
    daemon behind a proxy (a 502/503/504 without the API's error body), or a server in the sandbox (HTTP 502
    ``bad_gateway``)."""

    default_code = "unavailable"


class InsufficientStorageError(SandboxError):
    """A disk is full (HTTP 507): the daemon's, or a sandbox's writable layer (its ``disk_mb`` cap) during a file
    write. Nothing half-made was left. Retry once space is freed."""

    default_code = "insufficient_storage"


class InternalError(SandboxError):
    """A bug or an unexpected host failure on the server (HTTP 500)."""

    default_code = "internal"


class StreamError(SandboxError):
    """An output stream (SSE or WebSocket) was cut before the process's final ``exited`` event, and resuming
    from the last ``seq`` did not succeed either. The process keeps running in the sandbox: reconnect later with
    ``commands.connect(pid)`` or ``get_process(id)``."""

    default_code = "stream_cut"


class CommandExitError(SandboxError):
    """Raised by :meth:`CommandHandle.wait` when the command ended with a non-zero exit code.

    Attributes:
        result: the full :class:`~sandpit.CommandResult`.
        exit_code, stdout, stderr, error: shortcuts into ``result``.
    """

    default_code = "command_exit"

    def __init__(self, result: CommandResult) -> None:
        detail = result.error or result.stderr.strip()[-500:]
        message = f"command exited with code {result.exit_code}"
        if detail:
            message += f": {detail}"
        super().__init__(message)
        self.result = result

    @property
    def exit_code(self) -> int:
        """The command's exit code."""
        return self.result.exit_code

    @property
    def stdout(self) -> str:
        """Everything the command wrote to stdout."""
        return self.result.stdout

    @property
    def stderr(self) -> str:
        """Everything the command wrote to stderr."""
        return self.result.stderr

    @property
    def error(self) -> Optional[str]:
        """The agent's sentence when the command failed to start or timed out."""
        return self.result.error


class TemplateBuildError(SandboxError):
    """Raised by :meth:`Templates.wait` when the build ended ``failed``: ``message`` is the daemon's reason.

    Attributes:
        build: the failed :class:`~sandpit.TemplateBuild` (its ``log`` holds the last progress lines).
    """

    default_code = "template_build_failed"

    def __init__(self, build: TemplateBuild) -> None:
        super().__init__(f"template {build.name!r} failed to build: {build.error or 'no reason given'}")
        self.build = build


_CODE_TO_ERROR: Dict[str, Type[SandboxError]] = {
    "invalid_argument": InvalidArgumentError,
    "unauthenticated": AuthenticationError,
    "not_found": NotFoundError,
    "timeout": SandboxTimeoutError,
    "conflict": ConflictError,
    "payload_too_large": PayloadTooLargeError,
    "range_not_satisfiable": SandboxError,
    "resource_exhausted": ResourceExhaustedError,
    "quota_exceeded": ResourceExhaustedError,
    "rate_limited": ResourceExhaustedError,
    "unavailable": UnavailableError,
    "bad_gateway": UnavailableError,
    "insufficient_storage": InsufficientStorageError,
    "permission_denied": PermissionDeniedError,
    "already_exists": AlreadyExistsError,
    "not_empty": NotEmptyError,
    "is_a_directory": IsADirError,
    "not_a_directory": NotADirError,
    "internal": InternalError,
}
_STATUS_TO_CODE: Dict[int, str] = {
    400: "invalid_argument",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    405: "invalid_argument",  # a method the path does not have (the daemon says invalid_argument too)
    408: "timeout",
    409: "conflict",
    413: "payload_too_large",
    416: "range_not_satisfiable",
    429: "resource_exhausted",
    # A gateway in front of the daemon (or of a sandbox's agent) could not reach it.
    502: "unavailable",
    503: "unavailable",
    504: "unavailable",
    507: "insufficient_storage",
}


def _code_for_status(status_code: int) -> str:
    return _STATUS_TO_CODE.get(status_code, "internal" if 500 <= status_code <= 599 else "unknown")


def error_from_response(
    status_code: int, body: Union[bytes, str, None], headers: Optional[Mapping[str, str]] = None
) -> SandboxError:
    """Turn an HTTP error answer into the matching :class:`SandboxError` subclass, as every sandpit SDK does
    (docs/api.md, "How the SDKs map errors"; pinned by ``sdk/testdata/vectors.json``).

    A body ``{"error": {"code": ..., "message": ...}}`` with a code this SDK knows: the code decides the class and the
    message is the server's. A code it does not know (a newer server) keeps its ``code`` and gets the class its HTTP
    status stands for (a 409 is a :class:`ConflictError`). Any other body (none, text, a proxy's page, other JSON) is
    classified by the status (502-504 are ``unavailable``, other 5xx ``internal``, an unlisted status ``unknown``), and
    the message is ``HTTP <status>: <the body's first 500 characters>``. ``headers`` (the answer's) give
    ``retry_after`` from ``Retry-After``.
    """
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    code: Optional[str] = None
    message: Optional[str] = None
    try:
        detail = json.loads(text)["error"]
        if isinstance(detail["code"], str) and detail["code"]:
            code = detail["code"]
            if isinstance(detail.get("message"), str):
                message = detail["message"]
    except (ValueError, LookupError, TypeError, AttributeError):
        pass
    if message is None:
        shown = text.strip()[:500]
        message = f"HTTP {status_code}: {shown}" if shown else f"HTTP {status_code}"
    if code is None:
        code = _code_for_status(status_code)
    cls = _CODE_TO_ERROR.get(code) or _CODE_TO_ERROR.get(_code_for_status(status_code), SandboxError)
    err = cls(message, code=code, status_code=status_code)
    retry = (headers or {}).get("retry-after", "").strip()
    if retry.isdigit():
        err.retry_after = int(retry)
    return err
