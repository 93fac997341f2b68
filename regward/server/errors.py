"""Errors the services raise; the API maps each to one HTTP status.

RegwardError
└── ServiceError         status 400
    ├── Unauthenticated  401  no, unknown, expired or revoked credentials
    ├── PermissionDenied 403  a member (or a read-only token) attempting an owner's write
    ├── NotFound         404  also what an outsider gets for an organization
    ├── Conflict         409  a stale draft version, a name taken, the last owner leaving
    │   ├── StaleVersion      the draft changed since the edit's version
    │   └── NothingToApply    Save & Apply with a draft that is the applied revision already
    ├── InvalidInput     422  a bad field value; the message names the field and the value
    └── TooManyRequests  429  a rate limit reached; the message says how long it lasts
"""

from __future__ import annotations

from regward.errors import RegwardError


class ServiceError(RegwardError):
    status = 400


class Unauthenticated(ServiceError):
    status = 401


class PermissionDenied(ServiceError):
    status = 403


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409


class StaleVersion(Conflict):
    """An edit based on a version of the draft that another edit has replaced since."""


class NothingToApply(Conflict):
    """Save & Apply of a draft with no pending changes: no new revision is published."""


class InvalidInput(ServiceError):
    status = 422


class TooManyRequests(ServiceError):
    status = 429
