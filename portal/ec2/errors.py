"""EC2's refusals: a code, a message and an HTTP status, answered as EC2's error document."""

from __future__ import annotations

from base.errors import Conflict, Invalid, NotPermitted, QuotaExceeded, Refused, Unavailable
from compute.idempotency import KeyReused


class Ec2Error(Exception):
    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def auth_failure(message: str) -> Ec2Error:
    return Ec2Error("AuthFailure", message, 401)


def invalid_value(message: str) -> Ec2Error:
    return Ec2Error("InvalidParameterValue", message)


def missing(name: str) -> Ec2Error:
    return Ec2Error("MissingParameter", f"The request must contain the parameter {name}.")


# Invalid(field): the field names which EC2 code says the same thing.
INVALID_FIELD_CODES = {
    "image": "InvalidAMIID.NotFound",
    "ssh_key_ids": "InvalidKeyPair.NotFound",
}
QUOTA_CODES = {"instances": "InstanceLimitExceeded", "vcpus": "VcpuLimitExceeded"}


def from_refusal(exc: Refused, *, conflict_code: str = "IncorrectInstanceState") -> Ec2Error:
    """A service's refusal (base.errors) as EC2 says it; `conflict_code` is what a Conflict
    means for the action at hand (a busy instance, or no capacity for a new one)."""
    if isinstance(exc, Invalid):
        return Ec2Error(INVALID_FIELD_CODES.get(exc.field, "InvalidParameterValue"), exc.message)
    if isinstance(exc, QuotaExceeded):
        return Ec2Error(QUOTA_CODES.get(exc.resource, "InstanceLimitExceeded"), exc.message)
    if isinstance(exc, NotPermitted):
        return Ec2Error("UnauthorizedOperation", exc.message, 403)
    if isinstance(exc, Unavailable):
        return Ec2Error("Unavailable", exc.message, 503)
    if isinstance(exc, KeyReused):  # ClientToken is the idempotency key
        return Ec2Error("IdempotentParameterMismatch", exc.message)
    if isinstance(exc, Conflict):
        return Ec2Error(conflict_code, exc.message)
    return Ec2Error("InvalidParameterValue", exc.message)
