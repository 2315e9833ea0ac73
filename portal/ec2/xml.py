"""EC2's XML: each answer is <ActionResponse xmlns=...2016-11-15/> with a requestId, and each
error <Response><Errors><Error><Code/><Message/></Error></Errors><RequestID/></Response>.
Built with ElementTree from data, never formatted from strings."""

from __future__ import annotations

import xml.etree.ElementTree as ET  # noqa: S405 - writing, never parsing

from django.http import HttpResponse

NAMESPACE = "http://ec2.amazonaws.com/doc/2016-11-15/"
CONTENT_TYPE = "text/xml;charset=UTF-8"


def add(parent: ET.Element, tag: str, value=None) -> ET.Element:
    """A child element; a dict value becomes children, a list value items, None nothing."""
    element = ET.SubElement(parent, tag)
    fill(element, value)
    return element


def fill(element: ET.Element, value) -> None:
    if value is None:
        return
    if isinstance(value, dict):
        for tag, inner in value.items():
            if inner is not None:
                add(element, tag, inner)
    elif isinstance(value, list):
        for inner in value:
            add(element, "item", inner)
    elif isinstance(value, bool):
        element.text = "true" if value else "false"
    else:
        element.text = str(value)


def answer(action: str, request_id: str, body: dict) -> HttpResponse:
    root = ET.Element(f"{action}Response", xmlns=NAMESPACE)
    add(root, "requestId", request_id)
    fill(root, body)
    return _response(root, 200, request_id)


def error(code: str, message: str, status: int, request_id: str) -> HttpResponse:
    root = ET.Element("Response")
    item = add(add(root, "Errors"), "Error")
    add(item, "Code", code)
    add(item, "Message", message)
    add(root, "RequestID", request_id)
    return _response(root, status, request_id)


def _response(root: ET.Element, status: int, request_id: str) -> HttpResponse:
    document = ET.tostring(root, encoding="UTF-8", xml_declaration=True)
    response = HttpResponse(document, status=status, content_type=CONTENT_TYPE)
    response["x-amzn-RequestId"] = request_id
    return response
