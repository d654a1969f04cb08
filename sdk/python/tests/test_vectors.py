"""The SDKs' shared test vectors (``sdk/testdata/vectors.json``): error answers → error kinds, detach key specs →
bytes. The Rust and TypeScript SDKs check the same file. No daemon is needed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterator, List, Type

import pytest

from sandpit import (
    AlreadyExistsError,
    AuthenticationError,
    ConflictError,
    InsufficientStorageError,
    InternalError,
    InvalidArgumentError,
    IsADirError,
    NotADirError,
    NotEmptyError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ResourceExhaustedError,
    SandboxError,
    SandboxTimeoutError,
    UnavailableError,
    error_from_response,
)
from sandpit._attach import parse_detach_keys

VECTORS: Dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "testdata" / "vectors.json").read_text(encoding="utf-8")
)

#: This SDK's class of each kind (checked exactly: a subclass does not count).
KIND_TO_CLASS: Dict[str, Type[SandboxError]] = {
    "invalid_argument": InvalidArgumentError,
    "unauthenticated": AuthenticationError,
    "permission_denied": PermissionDeniedError,
    "not_found": NotFoundError,
    "timeout": SandboxTimeoutError,
    "conflict": ConflictError,
    "already_exists": AlreadyExistsError,
    "not_empty": NotEmptyError,
    "is_a_directory": IsADirError,
    "not_a_directory": NotADirError,
    "payload_too_large": PayloadTooLargeError,
    "resource_exhausted": ResourceExhaustedError,
    "unavailable": UnavailableError,
    "insufficient_storage": InsufficientStorageError,
    "internal": InternalError,
    "other": SandboxError,
}


@pytest.fixture(autouse=True)
def sandpit_env() -> Iterator[None]:
    """Overrides conftest's fixture of the same name, which starts a daemon: these tests need none."""
    yield


def _cases(section: str) -> List[Dict[str, Any]]:
    cases: List[Dict[str, Any]] = VECTORS[section]
    return cases


def test_every_kind_has_a_class() -> None:
    kinds = {k for k in VECTORS["kinds"] if k != "about"}
    assert kinds == set(KIND_TO_CLASS)
    assert {c["expected"] for c in _cases("errors")} <= kinds


@pytest.mark.parametrize("case", _cases("errors"), ids=lambda c: str(c["name"]))
def test_error_vector(case: Dict[str, Any]) -> None:
    assert ("body" in case) != ("json" in case), "give exactly one of body and json"
    body = case["body"].encode("utf-8") if "body" in case else json.dumps(case["json"]).encode("utf-8")
    err = error_from_response(case["status"], body)
    want = KIND_TO_CLASS[case["expected"]]
    assert type(err) is want, f"{type(err).__name__}, want {want.__name__}"
    assert err.code == case["code"]
    assert err.status_code == case["status"]
    if "message" in case:
        assert err.message == case["message"]
    for part in case.get("message_contains", []):
        assert part in err.message


@pytest.mark.parametrize("case", _cases("detach_keys"), ids=lambda c: repr(c["spec"]))
def test_detach_key_vector(case: Dict[str, Any]) -> None:
    if case.get("error"):
        with pytest.raises(ValueError):
            parse_detach_keys(case["spec"])
    else:
        assert parse_detach_keys(case["spec"]) == bytes(case["bytes"])
