"""AWS Signature Version 4, checked on the server: the canonical request, the string to sign
and the HMAC chain, as in AWS's "Create a signed AWS API request". Header signatures only
(Authorization: AWS4-HMAC-SHA256 ...), which is what the SDKs and the CLI send.

A write's signature is accepted once (`claim_signature`): the signatures seen in the last
REPLAY_SECONDS are kept in Redis, and the date check refuses anything older, so a captured
request that changes something cannot be sent again. Reads are not held to it: X-Amz-Date has
whole seconds, so two identical reads within one second carry one signature, and SDKs send
exactly that (a waiter's last DescribeInstances, then the caller's own); a replayed read
answers what the same read answers anyway.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl, quote

from django.conf import settings
from django.utils import timezone

from compute import leases
from portal.ec2.errors import Ec2Error, auth_failure
from tenants.access_keys import key_from_id, unseal
from tenants.models import AccessKey

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "ec2"
REPLAY_SECONDS = 600
AUTH_RE = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+),\s*SignedHeaders=(?P<headers>[^,\s]+),"
    r"\s*Signature=(?P<signature>[0-9a-f]{64})\s*"
)


@dataclass(frozen=True)
class Credential:
    key_id: str
    date: str
    region: str
    service: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


def _encode(text: str) -> str:
    return quote(text, safe="-_.~")


def canonical_queries(raw: str) -> set[str]:
    """The canonical query string as AWS defines it (each name and value decoded, then encoded
    again, RFC 3986, space as %20), and as botocore builds it from a URL it was given (the
    pairs as they are spelled, sorted): both bind the parameters the request carries."""
    pairs = sorted((_encode(k), _encode(v)) for k, v in parse_qsl(raw, keep_blank_values=True))
    as_sent = sorted(pair.partition("=")[::2] for pair in raw.split("&")) if raw else []
    return {"&".join(f"{k}={v}" for k, v in pairs), "&".join(f"{k}={v}" for k, v in as_sent)}


def header_value(request, name: str) -> str | None:
    if name == "content-type":
        return request.META.get("CONTENT_TYPE")
    if name == "content-length":
        return request.META.get("CONTENT_LENGTH")
    return request.META.get("HTTP_" + name.upper().replace("-", "_"))


def canonical_request(request, signed_headers: list[str], body: bytes, query: str) -> str:
    lines = []
    for name in signed_headers:
        value = header_value(request, name)
        if value is None:
            raise auth_failure(f"The signed header {name} is not in the request.")
        lines.append(f"{name}:{' '.join(value.split())}\n")
    return "\n".join(
        [
            request.method,
            quote(request.path, safe="/~"),
            query,
            "".join(lines),
            ";".join(signed_headers),
            hashlib.sha256(body).hexdigest(),
        ]
    )


def signing_key(secret: str, credential: Credential) -> bytes:
    key = f"AWS4{secret}".encode()
    for part in (credential.date, credential.region, credential.service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def signature(secret: str, credential: Credential, amz_date: str, canonical: str) -> str:
    to_sign = "\n".join([ALGORITHM, amz_date, credential.scope, hashlib.sha256(canonical.encode()).hexdigest()])
    return hmac.new(signing_key(secret, credential), to_sign.encode(), hashlib.sha256).hexdigest()


def _parse_credential(raw: str) -> Credential:
    parts = raw.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise Ec2Error("IncompleteSignature", "The Credential is not <key id>/<date>/<region>/ec2/aws4_request.")
    return Credential(*parts[:4])


def _request_time(request) -> tuple[str, datetime]:
    amz_date = header_value(request, "x-amz-date")
    if not amz_date:
        raise Ec2Error("MissingParameter", "The request must carry an X-Amz-Date header.")
    try:
        moment = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise Ec2Error("InvalidParameterValue", "X-Amz-Date is not in the form 20260130T120000Z.") from None
    return amz_date, moment


def authenticate(request, body: bytes) -> AccessKey:
    """The usable access key that signed this request, or an Ec2Error saying why not."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not header:
        raise Ec2Error("MissingAuthenticationToken", "The request must be signed (AWS Signature Version 4).", 401)
    match = AUTH_RE.fullmatch(header)
    if match is None:
        raise Ec2Error("IncompleteSignature", "The Authorization header is not an AWS4-HMAC-SHA256 signature.")
    credential = _parse_credential(match["credential"])
    amz_date, moment = _request_time(request)
    skew = abs((timezone.now() - moment).total_seconds())
    if skew > settings.EC2_CLOCK_SKEW_SECONDS:
        raise Ec2Error(
            "RequestExpired",
            f"Request has expired: X-Amz-Date {amz_date} is more than "
            f"{settings.EC2_CLOCK_SKEW_SECONDS // 60} minutes from the server's time.",
        )
    if credential.date != amz_date[:8]:
        raise auth_failure("The Credential's date is not the date of X-Amz-Date.")
    if credential.service != SERVICE:
        raise auth_failure(f"The Credential names service {credential.service!r}, not 'ec2'.")
    if credential.region != settings.EC2_REGION:
        raise auth_failure(
            f"The Credential names region {credential.region!r}; this endpoint is {settings.EC2_REGION}."
        )
    signed = match["headers"].split(";")
    if "host" not in signed or "x-amz-date" not in signed or signed != sorted(signed):
        raise auth_failure("SignedHeaders must include host and x-amz-date, in order.")
    key = key_from_id(credential.key_id)
    now = timezone.now()
    usable = key is not None and key.is_usable(now) and key.user.is_active and key.member_role
    secret = unseal(key.secret_sealed) if usable else None
    if secret is None:
        raise auth_failure("AWS was not able to validate the provided access credentials.")
    queries = canonical_queries(request.META.get("QUERY_STRING", ""))
    given = match["signature"]
    expected = [signature(secret, credential, amz_date, canonical_request(request, signed, body, q)) for q in queries]
    if not any(hmac.compare_digest(candidate, given) for candidate in expected):
        raise auth_failure(
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method."
        )
    key.signature = match["signature"]
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
        AccessKey.objects.filter(pk=key.pk).update(last_used_at=now)
    return key


def claim_signature(key: AccessKey) -> None:
    """Refuse a signature seen before (a replayed write); remember it for REPLAY_SECONDS."""
    seen = f"{settings.REDIS_PREFIX}:ec2-signature:{key.signature}"
    if not leases.client().set(seen, "1", nx=True, ex=REPLAY_SECONDS):
        raise auth_failure("This signature was already used; sign each request anew.")
