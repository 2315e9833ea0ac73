"""API plumbing shared by every app: error bodies, strict input, pagination, JSON 404."""

from __future__ import annotations

import sys
from types import SimpleNamespace
from urllib import parse

import orjson
from django.core import signing
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, pagination, parsers, renderers, serializers, status
from rest_framework.utils import encoders
from rest_framework.utils.urls import replace_query_param

# How long a client should wait before trying again after a 503.
RETRY_AFTER_SECONDS = 5
# The database went away (restart, failover, network): the request may well work a moment later.
DATABASE_FAULTS = (OperationalError, InterfaceError)


class ConflictError(exceptions.APIException):
    """An action that the object's current state does not allow (409)."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "This action is not allowed in the current state."
    default_code = "conflict"


class Unavailable(exceptions.APIException):
    """Something the request needs (the database, the mail server) cannot be reached now (503)."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The service is unavailable for a moment; try again shortly."
    default_code = "unavailable"


class QuotaExceeded(exceptions.APIException):
    status_code = status.HTTP_403_FORBIDDEN
    default_detail = "Quota exceeded."
    default_code = "quota_exceeded"


def exception_handler(exc, context):
    """Every API error is `{"detail": ..., "code": ..., "fields": {...}}`.

    `fields` maps each offending input field to its messages, so a client can show the error
    next to the field it belongs to.
    """
    # Imported here: DRF's views module loads DEFAULT_PARSER_CLASSES, that is this module, when it
    # is first imported.
    from rest_framework.views import exception_handler as drf_exception_handler

    if isinstance(exc, RequestDataTooBig):
        exc = exceptions.APIException("The request body is too large.")
        exc.status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    elif isinstance(exc, DATABASE_FAULTS):
        exc = Unavailable("The database cannot be reached right now; try again shortly.")
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


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, except that a body nested too deeply for Python's json module is a 400.

    `json.load` raises RecursionError, not ValueError, for `[[[[...]]]]`, which DRF lets through
    as a 500.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - the document is nested too deeply.") from None


# The JSON type each kind of field takes, as the OpenAPI document states it. DRF is lenient
# (5 for a name, "5" for a number, 1 for a UUID); the API takes what it documents.
JSON_TYPES = (
    (serializers.BooleanField, (bool,), "a boolean"),
    (serializers.IntegerField, (int,), "an integer"),
    (serializers.FloatField, (int, float), "a number"),
    (serializers.ListField, (list,), "a list"),
    (serializers.DictField, (dict,), "an object"),
    (serializers.CharField, (str,), "a string"),
    (serializers.ChoiceField, (str,), "a string"),
    (serializers.UUIDField, (str,), "a string"),
    (serializers.DateTimeField, (str,), "a string"),
    (serializers.DecimalField, (str,), "a string"),
    (serializers.PrimaryKeyRelatedField, (str,), "a string"),
)


def json_type_error(field, value) -> str | None:
    """Why `value` is not of the JSON type `field` documents, or None."""
    if value is None:
        return None  # the field's own allow_null decides
    for kind, types, name in JSON_TYPES:
        if isinstance(field, kind):
            # bool is an int in Python, and never an integer or a number in JSON
            wrong = isinstance(value, bool) and bool not in types
            return f"Must be {name}." if wrong or not isinstance(value, types) else None
    return None


class RejectUnknownFields:
    """Mixin for any serializer: fields it does not know are an error, not silently ignored.

    Read-only fields count as unknown on input, so a client learns it cannot set them; a value
    of another JSON type than the field's is an error too.
    """

    def to_internal_value(self, data):
        if isinstance(data, dict):
            errors = {}
            for name in sorted(data):
                field = self.fields.get(name)
                if field is None:
                    errors[name] = ["Unknown field."]
                elif field.read_only:
                    errors[name] = ["Read-only field."]
            if errors:
                raise serializers.ValidationError(errors)
            errors = {name: [message] for name in data if (message := json_type_error(self.fields[name], data[name]))}
            if errors:
                # Name the other fields' errors too, as DRF would have.
                try:
                    super().to_internal_value({k: v for k, v in data.items() if k not in errors})
                except serializers.ValidationError as exc:
                    if isinstance(exc.detail, dict):
                        for name, messages in exc.detail.items():
                            errors.setdefault(name, messages)
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


class StrictSerializer(RejectUnknownFields, serializers.Serializer):
    """Input serializer that rejects fields it does not know."""


def reject_nul(value: str, field: str) -> str:
    """Query parameters bypass serializers; PostgreSQL refuses NUL bytes in text, so say so."""
    if "\x00" in value:
        raise serializers.ValidationError({field: ["Null characters are not allowed."]})
    return value


class JSONRenderer(renderers.JSONRenderer):
    """DRF's JSON, written by orjson in a third of the time: the same bytes (DRF's own encoder
    decides every type orjson has no native form for, datetimes included), compact, UTF-8,
    U+2028/U+2029 escaped, as DRF does; only a float in exponent form is spelled differently
    (1e-7 for 1e-07), the same number. The API's own numbers are integers and strings."""

    _default = encoders.JSONEncoder().default

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        if data is None:
            return b""
        text = orjson.dumps(
            data, default=self._default, option=orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS
        )
        return text.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")


def strict_page_size(paginator, request) -> int:
    """`page_size` as the document states it: a whole number from 1; above the maximum gives
    the maximum. DRF would quietly fall back to the default for anything else."""
    raw = request.query_params.get(paginator.page_size_query_param)
    if raw is None:
        return paginator.page_size
    if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
        raise serializers.ValidationError(
            {paginator.page_size_query_param: [f"A whole number from 1 to {paginator.max_page_size}."]}
        )
    return min(int(raw), paginator.max_page_size)


def page_size_parameter(paginator, parameters: list[dict]) -> list[dict]:
    for parameter in parameters:
        if parameter["name"] == paginator.page_size_query_param:
            parameter["schema"] = {"type": "integer", "minimum": 1}
            most = paginator.max_page_size
            parameter["description"] = f"Rows per page, 1 to {most} (more gives {most})."
    return parameters


class Pagination(pagination.PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def get_page_size(self, request) -> int:
        return strict_page_size(self, request)

    def get_schema_operation_parameters(self, view) -> list[dict]:
        return page_size_parameter(self, super().get_schema_operation_parameters(view))


class NewestFirstCursor(pagination.CursorPagination):
    """Keyset pages, newest first, for lists that offer `?cursor=` (empty for the first page):
    no count and no OFFSET, so page 200 costs what page 1 does. `next` and `previous` carry
    the cursor; a cursor stays valid while rows come and go."""

    page_size = Pagination.page_size
    page_size_query_param = Pagination.page_size_query_param
    max_page_size = Pagination.max_page_size
    ordering = ("-created_at", "-id")

    invalid = "Invalid cursor: use the next or previous link of a page."

    def get_page_size(self, request) -> int:
        return strict_page_size(self, request)

    # Cursors are signed: a made-up one that DRF would decode fine (no position: the first
    # page again; another offset) is refused like any other forgery.
    def _signer(self) -> signing.Signer:
        return signing.Signer(salt="portal.api.cursor")

    def encode_cursor(self, cursor):
        url = super().encode_cursor(cursor)
        query = parse.parse_qs(parse.urlsplit(url).query, keep_blank_values=True)
        signed = self._signer().sign(query[self.cursor_query_param][0])
        return replace_query_param(url, self.cursor_query_param, signed)

    def decode_cursor(self, request):
        encoded = request.query_params.get(self.cursor_query_param)
        if not encoded:
            return None  # absent or empty: the first page
        try:
            unsigned = self._signer().unsign(encoded)
            return super().decode_cursor(SimpleNamespace(query_params={self.cursor_query_param: unsigned}))
        except (signing.BadSignature, exceptions.NotFound):
            raise serializers.ValidationError({self.cursor_query_param: [self.invalid]}) from None

    def paginate_queryset(self, queryset, request, view=None):
        # A made-up cursor decodes fine but carries a position that is no timestamp; it
        # surfaces when the page is read.
        try:
            return super().paginate_queryset(queryset, request, view)
        except DjangoValidationError:
            raise serializers.ValidationError({self.cursor_query_param: [self.invalid]}) from None


def server_error(request):
    """handler500: what an uncaught exception answers, wherever it was raised (a middleware
    reading the session, say, before any DRF view runs). API paths get the JSON error body, a
    503 with Retry-After when the database is the cause; pages get Django's 500 page."""
    if not request.path.startswith("/api/"):
        return defaults.server_error(request)
    exc = sys.exc_info()[1]
    if isinstance(exc, DATABASE_FAULTS):
        response = JsonResponse(
            {"detail": "The database cannot be reached right now; try again shortly.", "code": "unavailable"},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    return JsonResponse({"detail": "Internal server error.", "code": "server_error"}, status=500)


@csrf_exempt  # else a POST with a session cookie to an unknown route is CSRF's HTML 403, not this
def api_not_found(request, *args, **kwargs):
    return JsonResponse({"detail": f"No API route {request.path}.", "code": "not_found"}, status=404)
