"""Schemathesis over the whole OpenAPI document, in process, on the test database: every
operation, every check, with a read-write and a read-only token. No answer may be a server
error, and every answer must be one the document describes (status, headers, body).

Instance creates it makes only queue tasks; no worker runs here.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi import checks

from tenants.models import ApiToken
from tests.api.routes import make_instance, make_invoice, make_ssh_key
from tests.conftest import token_for

# Bounded so that both runs stay well under a minute and a half on two cores.
MAX_EXAMPLES = 5


@pytest.fixture(autouse=True)
def _keep_the_test_connection():
    """As Django's test client does: the WSGI handler closes connections that are not in
    autocommit at each request's start and end, and the test's transaction is one."""
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


@pytest.fixture(params=[ApiToken.Scope.WRITE, ApiToken.Scope.READ], ids=["read-write", "read-only"])
def token(request, alice, tenant_a, bob, host, image, flavor):
    """alice's token (owner of tenant A), and rows for the lists to show."""
    make_instance(request, alice, tenant_a)
    make_invoice(request, alice, tenant_a)
    make_ssh_key(request, alice, tenant_a)
    return token_for(alice, tenant_a, scope=request.param)


# Loaded at collection: making the document reads no table.
schema = schemathesis.openapi.from_wsgi(
    "/api/schema/?format=json",
    get_wsgi_application(),
    config=schemathesis.Config.from_dict(
        {
            "generation": {
                "max-examples": MAX_EXAMPLES,
                # PostgreSQL cannot store NUL in text, and DRF refuses it in every string field.
                "allow-x00": False,
                "deterministic": True,
            },
        }
    ),
)


# Refusals no JSON schema can state: a body that names rows which do not exist (any UUID fits the
# document), a key or token that is not real, a time that has passed. A schema-valid request
# refused with a 400 passes only when every field the 400 names is listed here for its operation.
NOT_IN_THE_SCHEMA = {
    "POST /api/v1/instances": {"image", "flavor", "ssh_key_ids", "name"},  # names are unique per tenant
    "POST /api/v1/instances/{id}/resize": {"flavor"},
    "POST /api/v1/instances/{id}/rebuild": {"image"},
    "GET /api/v1/instances": {"cursor"},  # only a `next` or `previous` link holds a valid one
    "POST /api/v1/invitations/accept": {"token"},
    "POST /api/v1/ssh-keys": {"public_key"},
    "POST /api/v1/tokens": {"expires_at"},
    # Groups must exist; ports only for tcp/udp, and not inverted; a CIDR must parse; the
    # group's name is unique per tenant; the rule count is limited.
    "POST /api/v1/security-groups": {"name", "rules", "remote_group_id", "port_min", "port_max", "cidr"},
    "POST /api/v1/security-group-rules": {"security_group_id", "remote_group_id", "port_min", "port_max", "cidr"},
    "PUT /api/v1/instances/{id}/security-groups": {"security_group_ids"},
    "POST /api/v1/access-keys": {"expires_at"},
}


def positive_data_acceptance(ctx, response, case):
    """Schemathesis's check of the same name, less the refusals above."""
    try:
        return checks.positive_data_acceptance(ctx, response, case)
    except RejectedPositiveData:
        named = set(response.json().get("fields", {})) if response.status_code == 400 else None
        if named and named <= NOT_IN_THE_SCHEMA.get(case.operation.label, set()):
            return None
        raise


@schema.parametrize()
# The rows and the token are made once per operation and shared by its examples, on purpose.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_it_answers_as_the_schema_says(case, token):
    case.call_and_validate(
        headers={"Authorization": f"Bearer {token}"},
        excluded_checks=[checks.positive_data_acceptance],
        additional_checks=[positive_data_acceptance],
    )
