"""Strict input: JSON of the documented types, no unknown fields, no NUL bytes."""

from __future__ import annotations

from rest_framework import exceptions, parsers, serializers


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
