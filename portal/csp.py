"""Content-Security-Policy on every response: our own scripts, styles and fonts only.

No inline script or style runs in the portal's pages: behaviour lives in static files and
layout in classes. What needs more than 'self':
- img-src data: the TOTP QR code (a data: SVG) and Bootstrap's icons (data: SVGs in its CSS);
- connect-src: the console proxy's WebSocket, which listens on its own origin;
- /api/redoc/: ReDoc (served from the site, like Swagger UI on /api/docs/, which needs nothing
  more) adds two <style> elements, allowed by their hashes: an empty one that styled-components
  fills through the CSSOM, and perfect-scrollbar's CSS (drf-spectacular-sidecar's pinned
  version; tests/ui/test_api_docs.py fails when it changes). Its search index runs in a Worker
  made from a blob: URL. No CDN, no 'unsafe-inline' anywhere.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings

HEADER = "Content-Security-Policy"
REDOC_STYLE_HASHES = [
    "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='",  # "" (styled-components' sheet)
    "'sha256-QMIg+bpjm3JdElJ388KYke01izlUW0UoNOeKjpMxdgc='",  # perfect-scrollbar's CSS
]


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
    if path.startswith("/api/redoc/"):
        directives["style-src"] += REDOC_STYLE_HASHES
        directives["worker-src"] = ["'self'", "blob:"]
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
