"""Fixtures of the EC2 API tests: access keys, and boto3 clients and the AWS CLI pointed at the
live test server's /ec2/ (loopback only)."""

from __future__ import annotations

import pytest

from tenants import services as tenant_services
from tenants.models import ApiToken
from tests.conftest import actor

REGION = "portal-1"


def access_key(user, tenant, scope: str = ApiToken.Scope.WRITE) -> tuple[str, str]:
    key, secret = tenant_services.access_key_create(actor=actor(user, tenant), name="sdk", scope=scope)
    return key.access_key_id, secret


@pytest.fixture
def endpoint(live_server, settings, monkeypatch) -> str:
    from django.db import connections

    settings.EC2_REGION = REGION
    # The live server answers each request in a thread of its own; a persistent connection
    # would outlive its thread and keep the test database from being dropped at the end.
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 0)
    return f"{live_server.url}/ec2/"


@pytest.fixture
def ec2_client(endpoint):
    """A boto3 EC2 client for a key pair, talking to the live server only (no retries: a refusal
    is the answer under test, and a retry signed in the same second would be a replay)."""
    import boto3
    from botocore.config import Config

    def make(key_id: str, secret: str):
        return boto3.session.Session().client(
            "ec2",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            config=Config(retries={"max_attempts": 1, "mode": "standard"}),
        )

    return make


@pytest.fixture
def raw_call(endpoint):
    """Send one request signed by botocore's own SigV4 signer, exactly as given; returns
    (status, EC2 error code or None, the body). `prepared` re-sends an earlier request."""
    import urllib.error
    import urllib.request
    from urllib.parse import urlencode

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    def sign(key_id: str, secret: str, params: dict, *, region: str = REGION, method: str = "POST") -> AWSRequest:
        if method == "GET":
            request = AWSRequest(method="GET", url=f"{endpoint}?{urlencode(params)}")
        else:
            request = AWSRequest(
                method="POST",
                url=endpoint,
                data=urlencode(params),
                headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
            )
        SigV4Auth(Credentials(key_id, secret), "ec2", region).add_auth(request)
        return request

    def send(request: AWSRequest) -> tuple[int, str | None, str]:
        prepared = request.prepare()
        body = prepared.body.encode() if prepared.body else None
        outgoing = urllib.request.Request(  # noqa: S310 - the live test server on loopback
            prepared.url, data=body, headers=dict(prepared.headers), method=prepared.method
        )
        try:
            with urllib.request.urlopen(outgoing, timeout=30) as response:  # noqa: S310
                return response.status, None, response.read().decode()
        except urllib.error.HTTPError as exc:
            body = exc.read().decode()
            code = body.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in body else None
            return exc.code, code, body

    def call(key_id: str, secret: str, params: dict, **options) -> tuple[int, str | None, str]:
        return send(sign(key_id, secret, params, **options))

    call.sign = sign
    call.send = send
    return call
