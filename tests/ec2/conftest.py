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
def endpoint(live_server, settings) -> str:
    settings.EC2_REGION = REGION
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
