"""The one view of the EC2 Query API: POST (form body) or GET (query string) to /ec2/.

No session, no CSRF: a request is its own credential, signed with an access key
(portal.ec2.signing). Every answer is EC2's XML, refusals included; nothing the client sends
can make it a 500.
"""

from __future__ import annotations

import logging
import uuid
from urllib.parse import parse_qsl

from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt

from base.errors import Refused
from portal.ec2 import actions, signing, xml
from portal.ec2.errors import Ec2Error, from_refusal
from tenants.access import Actor

log = logging.getLogger(__name__)


def _params(request, body: bytes) -> dict[str, str]:
    params = dict(parse_qsl(request.META.get("QUERY_STRING", ""), keep_blank_values=True))
    if request.method == "POST" and request.META.get("CONTENT_TYPE", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        try:
            params.update(parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False))
        except UnicodeDecodeError:
            raise Ec2Error("InvalidParameterValue", "The request body is not UTF-8.") from None
    if any("\x00" in k or "\x00" in v for k, v in params.items()):
        raise Ec2Error("InvalidParameterValue", "A parameter holds a NUL character.")
    return params


@csrf_exempt
def ec2(request) -> HttpResponse:
    request_id = str(uuid.uuid4())
    if request.method not in ("GET", "POST"):
        return xml.error("InvalidAction", "Use GET or POST.", 405, request_id)
    try:
        try:
            body = request.body
        except RequestDataTooBig:
            raise Ec2Error("RequestEntityTooLarge", "The request body is too large.", 413) from None
        key = signing.authenticate(request, body)
        params = _params(request, body)
        action = params.get("Action")
        if not action:
            raise Ec2Error("MissingAction", "The request must contain the parameter Action.")
        if actions.writes(action):
            signing.claim_signature(key)
        actor = Actor(key.user, key.tenant, key.member_role, access_key=key)
        call = actions.Call(actor=actor, params=params, endpoint=request.build_absolute_uri(request.path))
        return xml.answer(action, request_id, actions.perform(call, action))
    except Ec2Error as exc:
        return xml.error(exc.code, exc.message, exc.status, request_id)
    except Refused as exc:  # a service's refusal an action did not translate itself
        error = from_refusal(exc)
        return xml.error(error.code, error.message, error.status, request_id)
    except DatabaseError:
        log.exception("ec2 %s: database error", request_id)
        return xml.error("Unavailable", "The service is unavailable; try again.", 503, request_id)
    except Exception:
        log.exception("ec2 %s: internal error", request_id)
        return xml.error("InternalError", "An internal error has occurred.", 500, request_id)
