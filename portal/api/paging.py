"""Pages of lists: numbered pages, and signed keyset cursors for the busiest lists."""

from __future__ import annotations

from base64 import b64encode
from types import SimpleNamespace
from urllib import parse

from django.core import signing
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, pagination, serializers
from rest_framework.utils.urls import replace_query_param


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
        """DRF's cursor (its `o`, `r` and `p` in base64), signed, in the page's URL: written
        out, since DRF's own puts it in the URL only for this to take it out again."""
        tokens = {}
        if cursor.offset != 0:
            tokens["o"] = str(cursor.offset)
        if cursor.reverse:
            tokens["r"] = "1"
        if cursor.position is not None:
            tokens["p"] = cursor.position
        encoded = b64encode(parse.urlencode(tokens, doseq=True).encode("ascii")).decode("ascii")
        return replace_query_param(self.base_url, self.cursor_query_param, self._signer().sign(encoded))

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
