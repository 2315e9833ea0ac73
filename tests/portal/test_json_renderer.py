"""The API's JSON renderer (orjson) writes what DRF's own would: the same bytes, except that a
float in exponent form may be spelled differently (1e-7 for 1e-07), the same number."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.utils.translation import gettext_lazy
from rest_framework.renderers import JSONRenderer as DRFRenderer
from rest_framework.utils.serializer_helpers import ReturnDict, ReturnList

from portal.api.renderers import JSONRenderer

SAMPLES = {
    "text": "naïve ☃ \u2028 line \u2029 para </script>",
    "lazy": gettext_lazy("Not found."),
    "numbers": [0, -1, 2**53, 1.5, 0.1, True, False, None],
    "decimal": Decimal("99.900"),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "when": datetime(2026, 11, 21, 12, 0, 0, 123456, tzinfo=UTC),
    "day": date(2026, 11, 21),
    "clock": time(23, 59, 58),
    "span": timedelta(hours=1, seconds=3),
    "nested": ReturnDict({"rows": ReturnList([{"a": 1}, {"b": [1, 2]}], serializer=None)}, serializer=None),
    "int keys": {1: "one", 2: "two"},
    "bytes": b"raw",
    "tuple": (1, 2),
}


def test_it_writes_the_same_bytes_as_drf():
    assert JSONRenderer().render(SAMPLES) == DRFRenderer().render(SAMPLES)


def test_it_writes_the_same_numbers_as_drf_in_exponent_form():
    numbers = [1e-7, 1.5e300, -2.5e-12, float(Decimal("0.000001"))]

    assert json.loads(JSONRenderer().render(numbers)) == json.loads(DRFRenderer().render(numbers)) == numbers


def test_it_renders_nothing_for_no_data():
    assert JSONRenderer().render(None) == DRFRenderer().render(None) == b""
