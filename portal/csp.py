"""Content-Security-Policy on every response: our own scripts, styles and fonts only.

No inline script or style runs in the portal's pages: behaviour lives in static files and
layout in classes. What needs more than 'self':
- img-src data: the TOTP QR code (a data: SVG) and Bootstrap's icons (data: SVGs in its CSS);
- connect-src: the console proxy's WebSocket, which listens on its own origin;
- /api/docs/: drf-spectacular's Swagger UI, a third-party page that loads from a CDN and
  carries an inline style; it gets only those two exceptions.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings

HEADER = "Content-Security-Policy"
SWAGGER_CDN = "https://cdn.jsdelivr.net"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def policy_for(path: str) -> str:
    # Read per response: the console proxy's address is a setting that tests change.
    proxy = _origin(settings.CONSOLE_PROXY_URL)
    directives = {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'", *([proxy] if proxy else [])],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
    if path.startswith("/api/docs/"):
        directives["script-src"].append(SWAGGER_CDN)
        directives["style-src"] += [SWAGGER_CDN, "'unsafe-inline'"]
        directives["img-src"].append(SWAGGER_CDN)
    return "; ".join(f"{name} {' '.join(sources)}" for name, sources in directives.items())


class ContentSecurityPolicyMiddleware:
    """Adds the policy unless a view set its own."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if HEADER not in response.headers:
            response.headers[HEADER] = policy_for(request.path)
        return response
