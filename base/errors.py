"""Why a service refuses: plain exceptions, one family for every app.

Services raise these; they know nothing of HTTP. The web layer maps each kind to its answer in
one place for the API (portal.api.errors.exception_handler) and one for the HTML pages
(portal.views.guards). Each carries the sentence a person reads and a stable `code` a program
can branch on.
"""

from __future__ import annotations


class Refused(Exception):
    """A service said no. Nothing was changed."""

    code = "refused"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Invalid(Refused):
    """Input that names something wrong; `field` is the input it was about."""

    code = "invalid"

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class Conflict(Refused):
    """The object's current state does not allow this (a busy instance, a last owner)."""

    code = "conflict"


class NotPermitted(Refused):
    """The actor's role or token does not allow this."""

    code = "permission_denied"


class QuotaExceeded(Refused):
    """The tenant's `resource` limit would be passed: `in_use` + `requested` > `limit`."""

    code = "quota_exceeded"

    def __init__(self, resource: str, *, in_use: int, requested: int, limit: int):
        super().__init__(f"Quota exceeded for {resource}: {in_use} in use + {requested} requested > limit {limit}.")
        self.resource = resource
        self.in_use = in_use
        self.requested = requested
        self.limit = limit

    @property
    def left(self) -> int:
        return max(self.limit - self.in_use, 0)


class Unavailable(Refused):
    """Something the request needs (the mail server, a host) cannot be reached now; try later."""

    code = "unavailable"
