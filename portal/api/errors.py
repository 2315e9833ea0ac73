"""The API's one answer to every error: `{"detail": ..., "code": ..., "fields": {...}}`.

Services refuse with base.errors; this module alone decides which HTTP status each refusal is.
"""

from __future__ import annotations

import sys

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, serializers, status
from rest_framework.views import exception_handler as drf_exception_handler

from base.errors import Conflict, Invalid, NotPermitted, QuotaExceeded, Refused, Unavailable
from portal.i18n import refusal_text

# How long a client should wait before trying again after a 503.
RETRY_AFTER_SECONDS = 5
# The database went away (restart, failover, network): the request may well work a moment later.
DATABASE_FAULTS = (OperationalError, InterfaceError)
DATABASE_DOWN = gettext_lazy("The database cannot be reached right now; try again shortly.")

# The status of each kind of refusal; the most specific class that matches wins.
REFUSAL_STATUS = (
    (QuotaExceeded, status.HTTP_403_FORBIDDEN),
    (NotPermitted, status.HTTP_403_FORBIDDEN),
    (Conflict, status.HTTP_409_CONFLICT),
    (Unavailable, status.HTTP_503_SERVICE_UNAVAILABLE),
    (Refused, status.HTTP_400_BAD_REQUEST),
)


def as_api_exception(exc: Refused) -> exceptions.APIException:
    """The DRF exception that answers a service's refusal, in the request's language (English
    unless the client asked for another with Accept-Language, or a logged-in user chose one)."""
    message = refusal_text(exc)
    if isinstance(exc, Invalid):
        return serializers.ValidationError({exc.field: [message]})
    answer = exceptions.APIException(message, code=exc.code)
    answer.status_code = next(code for kind, code in REFUSAL_STATUS if isinstance(exc, kind))
    return answer


def exception_handler(exc, context):
    """Every API error is `{"detail": ..., "code": ..., "fields": {...}}`.

    `fields` maps each offending input field to its messages, so a client can show the error
    next to the field it belongs to.
    """
    if isinstance(exc, Refused):
        exc = as_api_exception(exc)
    elif isinstance(exc, RequestDataTooBig):
        exc = exceptions.APIException(_("The request body is too large."))
        exc.status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    elif isinstance(exc, DATABASE_FAULTS):
        exc = as_api_exception(Unavailable(DATABASE_DOWN))
    elif isinstance(exc, DjangoValidationError):  # raised by a service, below the serializers
        exc = serializers.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if response.status_code == status.HTTP_503_SERVICE_UNAVAILABLE:
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    data = response.data
    if isinstance(exc, exceptions.ValidationError):
        fields = data if isinstance(data, dict) else {"non_field_errors": data}
        first = next(iter(fields.items()), ("", ["Invalid input."]))
        message = first[1][0] if isinstance(first[1], list) and first[1] else str(first[1])
        body = {
            "detail": f"{first[0]}: {message}" if first[0] != "non_field_errors" else str(message),
            "code": "invalid",
            "fields": fields,
        }
    else:
        detail = data.get("detail", data) if isinstance(data, dict) else data
        code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
        if isinstance(exc, Http404 | DjangoPermissionDenied):
            code = "not_found" if isinstance(exc, Http404) else "permission_denied"
        body = {"detail": str(detail), "code": code}
    response.data = body
    return response


def server_error(request):
    """handler500: what an uncaught exception answers, wherever it was raised (a middleware
    reading the session, say, before any DRF view runs). API paths get the JSON error body, a
    503 with Retry-After when the database is the cause; pages get Django's 500 page."""
    if not request.path.startswith("/api/"):
        return defaults.server_error(request)
    exc = sys.exc_info()[1]
    if isinstance(exc, DATABASE_FAULTS):
        response = JsonResponse(
            {"detail": DATABASE_DOWN, "code": Unavailable.code},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    return JsonResponse({"detail": _("Internal server error."), "code": "server_error"}, status=500)


@csrf_exempt  # else a POST with a session cookie to an unknown route is CSRF's HTML 403, not this
def api_not_found(request, *args, **kwargs):
    return JsonResponse(
        {"detail": _("No API route %(path)s.") % {"path": request.path}, "code": "not_found"}, status=404
    )
