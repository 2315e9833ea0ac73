"""API plumbing shared by every app: error bodies, strict input, pagination, JSON 404."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, JsonResponse
from rest_framework import exceptions, pagination, serializers, status
from rest_framework.views import exception_handler as drf_exception_handler


class ConflictError(exceptions.APIException):
    """An action that the object's current state does not allow (409)."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "This action is not allowed in the current state."
    default_code = "conflict"


class QuotaExceeded(exceptions.APIException):
    status_code = status.HTTP_403_FORBIDDEN
    default_detail = "Quota exceeded."
    default_code = "quota_exceeded"


def exception_handler(exc, context):
    """Every API error is `{"detail": ..., "code": ..., "fields": {...}}`.

    `fields` maps each offending input field to its messages, so a client can show the error
    next to the field it belongs to.
    """
    if isinstance(exc, RequestDataTooBig):
        exc = exceptions.APIException("The request body is too large.")
        exc.status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
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


class StrictSerializer(serializers.Serializer):
    """Input serializer that rejects fields it does not know, instead of ignoring them."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class Pagination(pagination.PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


def api_not_found(request, *args, **kwargs):
    return JsonResponse({"detail": f"No API route {request.path}.", "code": "not_found"}, status=404)

