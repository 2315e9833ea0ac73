"""The OpenAPI document says what the API does: every error it answers, strict request bodies.

drf-spectacular describes the successful responses; `AutoSchema` adds, to every operation, the
error statuses the API's plumbing (portal.api) can answer with their one body, and marks request
bodies of serializers that reject unknown fields with `additionalProperties: false`.
"""

from __future__ import annotations

from drf_spectacular import openapi
from drf_spectacular.plumbing import force_instance
from rest_framework import permissions, serializers

from portal.api.errors import RETRY_AFTER_SECONDS
from portal.api.inputs import RejectUnknownFields


class ApiErrorSerializer(serializers.Serializer):
    """Every error the API answers (portal.api.errors.exception_handler)."""

    detail = serializers.CharField(help_text="A sentence for people; names the first bad field, if any.")
    code = serializers.CharField(help_text="For programs: invalid, not_found, permission_denied, conflict, ...")
    fields = serializers.DictField(
        child=serializers.JSONField(),
        required=False,
        help_text="Only with code `invalid`: each offending input field and its messages.",
    )


ERRORS = {
    400: "Invalid input: `fields` names each offending field (body, query parameter or header).",
    401: "No credentials, or an invalid, expired or revoked API token.",
    403: "Not allowed: the role in the tenant is too low, the token is read-only, or a quota is full.",
    404: "No such object in this tenant (the same answer for another tenant's), or no such page.",
    409: "The object's state, or another object, does not allow this now.",
    413: "The request body is too large.",
    415: "The request body is not JSON.",
    503: "The database (or the mail server) cannot be reached for a moment; retry after Retry-After seconds.",
}
BODY_METHODS = {"POST", "PUT", "PATCH"}


class AutoSchema(openapi.AutoSchema):
    def _error_statuses(self) -> list[int]:
        """The error statuses this operation can answer, from what the plumbing does for it."""
        statuses = {401, 503}
        safe = self.method in permissions.SAFE_METHODS
        public = all(issubclass(p, permissions.AllowAny) for p in self.view.permission_classes)
        if not (public and safe):
            statuses.add(403)
        if "{" in self.path or (self._is_list_view() and self._get_paginator()):
            statuses.add(404)
        # Every query parameter and header is checked (page_size too); a bad one is a 400.
        if self.method in BODY_METHODS or any(p["in"] in ("query", "header") for p in self._get_parameters()):
            statuses.add(400)
        if self.method in BODY_METHODS:
            statuses |= {413, 415}
        if not safe:
            statuses.add(409)
        return sorted(statuses)

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        error = self.resolve_serializer(ApiErrorSerializer, "response").ref
        for status in self._error_statuses():
            response = {"description": ERRORS[status], "content": {"application/json": {"schema": error}}}
            if status == 503:
                response["headers"] = {
                    "Retry-After": {
                        "schema": {"type": "integer", "minimum": 0},
                        "required": True,
                        "description": f"Seconds to wait before trying again ({RETRY_AFTER_SECONDS}).",
                    }
                }
            responses.setdefault(str(status), response)
        return responses

    def _map_serializer(self, serializer, direction, bypass_extensions=False):
        schema = super()._map_serializer(serializer, direction, bypass_extensions)
        # Unknown (and read-only) fields are refused with a 400; the schema says so.
        instance = force_instance(serializer)
        if not type(instance).__dict__.get("__doc__"):
            schema.pop("description", None)  # inherited: it describes a base class, not this body
        if direction == "request" and isinstance(instance, RejectUnknownFields):
            schema["additionalProperties"] = False
        if direction == "request" and hasattr(instance, "documented_variants"):
            schema = self._variants(schema, instance.documented_variants())
        return schema

    @staticmethod
    def _variants(schema: dict, variants: list[dict]) -> dict:
        """A body that takes one of several sets of fields (a flavor, or a custom size): `oneOf`
        the variants, each with its own required fields and bounds, and nothing else."""
        shapes = []
        for variant in variants:
            properties = {
                name: {**prop, **variant.get("bounds", {}).get(name, {})}
                for name, prop in schema["properties"].items()
                if name not in variant.get("without", ())
            }
            required = sorted({*schema.get("required", ()), *variant.get("required", ())})
            shape = {**schema, "properties": properties, "required": required}
            shapes.append({**shape, "description": variant["description"]})
        return {"oneOf": shapes, "description": schema.get("description", "")}

    def _get_request_for_media_type(self, serializer, direction="request"):
        # A PATCH normally makes every field optional; `whole_on_patch` serializers (a member's
        # role, a host's status) need their one field, and the schema says that too.
        instance = force_instance(serializer)
        if self.method == "PATCH" and getattr(instance, "whole_on_patch", False):
            component = self.resolve_serializer(instance, direction)
            return component.ref, bool(component.schema.get("required"))
        return super()._get_request_for_media_type(serializer, direction)
