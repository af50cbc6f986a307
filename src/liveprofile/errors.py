"""One root exception for everything liveprofile raises on purpose.

Every error says what was wrong and what to do about it, and knows the exit code the CLI should
return and the HTTP status a service should answer with.

>>> err = InvalidEvent("missing field 'ts'")
>>> isinstance(err, LiveprofileError), err.exit_code, err.http_status
(True, 65, 422)
"""

from __future__ import annotations


class LiveprofileError(Exception):
    """Root of all liveprofile errors."""

    exit_code: int = 1
    http_status: int = 500


class ConfigError(LiveprofileError):
    """The pipeline configuration is invalid; the message names the field and the fix."""

    exit_code = 78  # EX_CONFIG
    http_status = 400


class InvalidEvent(LiveprofileError):
    """An input record is not a valid event; it goes to the dead-letter sink with this reason."""

    exit_code = 65  # EX_DATAERR
    http_status = 422


class SourceError(LiveprofileError):
    """An event source cannot be opened or read (missing file, unknown format, bad mapping)."""

    exit_code = 66  # EX_NOINPUT
    http_status = 400


class StoreError(LiveprofileError):
    """The feature store cannot be opened, read or written."""

    exit_code = 74  # EX_IOERR
    http_status = 503


class DamagedState(StoreError):
    """A stored row cannot be decoded (corrupted bytes); the message names the row."""


class StateVersionError(StoreError):
    """A stored blob was written by an incompatible schema version."""


class ProfileNotFound(LiveprofileError):
    """No profile is stored for the requested user."""

    exit_code = 1
    http_status = 404


class SegmentNotFound(LiveprofileError):
    """The store's pipeline declares no segment of that name."""

    exit_code = 1
    http_status = 404


class TaskNotFound(LiveprofileError):
    """The requested task is not in the store's config, or has no model in the store yet."""

    exit_code = 1
    http_status = 404


class InvalidRequest(LiveprofileError):
    """A read request the caller can fix (e.g. too many candidates); the message says how."""

    exit_code = 64  # EX_USAGE
    http_status = 400


class StoreLocked(StoreError):
    """Another runner holds the store's writer lock; the message names it."""

    exit_code = 75  # EX_TEMPFAIL
    http_status = 409
