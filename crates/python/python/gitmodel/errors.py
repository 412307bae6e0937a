"""The exceptions gitmodel raises. Each is a :class:`GitModelError`; most are also the
built-in exception a caller would reach for first (``LookupError``, ``ValueError``,
``ConnectionError``)."""

from __future__ import annotations

from typing import Any, Optional


class GitModelError(Exception):
    """Anything git-model could not do; ``str(e)`` says what and why."""

    def __init__(self, message: str, **attrs: Any) -> None:
        super().__init__(message)
        self.message = message
        for k, v in attrs.items():
            setattr(self, k, v)


class NotFound(GitModelError, LookupError):
    """A revision, model, stage, file or tensor that does not exist."""


class GateRefused(GitModelError):
    """A promotion the stage's gates refused. ``failed`` lists the failed gates as dicts
    (``rule``, ``passed``, ``detail``)."""

    model: str
    stage: str
    commit: str
    failed: list


class IntegrityError(GitModelError):
    """Bytes that are not what their id says: a corrupted chunk, or a file that does not
    hash to its oid. Nothing unverified was returned or written."""

    path: Optional[str]
    oid: Optional[str]


class RemoteError(GitModelError, ConnectionError):
    """The git host or the git-model server could not be reached or refused. ``url`` (no
    password) and ``status`` (the HTTP status, when there was one) say which and how."""

    url: Optional[str]
    status: Optional[int]


class ConfigError(GitModelError, ValueError):
    """How git-model was called or configured is wrong (a setting, an argument)."""


class UnsupportedDtype(GitModelError, TypeError):
    """A tensor type numpy cannot hold without an extra package (named in the message)."""


__all__ = [
    "GitModelError",
    "NotFound",
    "GateRefused",
    "IntegrityError",
    "RemoteError",
    "ConfigError",
    "UnsupportedDtype",
]
