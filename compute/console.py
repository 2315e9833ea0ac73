"""Console access: single-use tokens in Redis, and the websockify side that redeems them.

A token is 256 random bits, given to the browser once; Redis keeps only its SHA-256, with a
TTL of CONSOLE_TOKEN_TTL seconds, and GETDEL redeems it, so it opens exactly one connection.
The proxy re-checks every few seconds that the session may go on (instance still running on
the same VNC port, tenant active, user still a member) and cuts it at once when not, or when
it has lasted CONSOLE_MAX_SESSION_SECONDS.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import socket
import threading
import time
from dataclasses import asdict, dataclass
from urllib.parse import parse_qs, urlparse

import redis
from django.conf import settings
from django.db import connection
from django.utils.translation import gettext as _
from websockify.token_plugins import BasePlugin
from websockify.websocketproxy import ProxyRequestHandler

from base.errors import Conflict, NotPermitted
from compute.models import Instance, InstanceState
from compute.transitions import state_word
from tenants.access import Actor
from tenants.models import Membership, Role, Tenant, role_at_least

CONSOLE_ROLE = Role.MEMBER  # keyboard and screen of the guest: not for viewers
# A rescued instance runs the rescue system, which is used through the console.
CONSOLE_STATES = (InstanceState.RUNNING, InstanceState.RESCUE)


@dataclass(frozen=True)
class ConsoleSession:
    instance_id: str
    user_id: int
    tenant_id: str
    host: str
    port: int
    issued_at: float

    @property
    def target(self) -> tuple[str, int]:
        return self.host, self.port


def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def _key(token: str) -> str:
    digest = hashlib.sha256(token.encode()).hexdigest()
    return f"{settings.REDIS_PREFIX}:console:{digest}"


def mint_token(*, actor: Actor, instance: Instance) -> str:
    """A fresh single-use console token for a running instance the actor may operate."""
    if not role_at_least(actor.role, CONSOLE_ROLE) or actor.token_read_only:
        raise NotPermitted(_("The console needs the member role and a read-write token."))
    if instance.state not in CONSOLE_STATES:
        raise Conflict(
            _("The console is available while the instance runs; it is %(state)s.")
            % {"state": state_word(instance.state)}
        )
    if not instance.vnc_port:
        raise Conflict(_("This instance has no graphical console: its host offers no VNC display."))
    token = secrets.token_urlsafe(32)
    session = ConsoleSession(
        instance_id=str(instance.pk),
        user_id=actor.user.pk,
        tenant_id=str(instance.tenant_id),
        host=instance.host.vnc_listen,
        port=instance.vnc_port,
        issued_at=time.time(),
    )
    _redis().set(_key(token), json.dumps(asdict(session)), ex=settings.CONSOLE_TOKEN_TTL)
    return token


def websocket_url(token: str) -> str:
    return f"{settings.CONSOLE_PROXY_URL.rstrip('/')}/?token={token}"


def redeem(token: str) -> ConsoleSession | None:
    """The session a token stands for, once: the token is gone after this call."""
    if not token or len(token) > 200:
        return None
    raw = _redis().getdel(_key(token))
    if raw is None:
        return None
    return ConsoleSession(**json.loads(raw))


def refusal(session: ConsoleSession) -> str | None:
    """Why the session must end now, or None while it may go on."""
    if time.time() - session.issued_at > settings.CONSOLE_MAX_SESSION_SECONDS:
        return "session time limit reached"
    instance = Instance.objects.filter(pk=session.instance_id).only("state", "vnc_port", "tenant_id").first()
    if instance is None or instance.state not in CONSOLE_STATES or instance.vnc_port != session.port:
        return "the instance is no longer running"
    if not Tenant.objects.filter(pk=session.tenant_id, status=Tenant.Status.ACTIVE).exists():
        return "the tenant is suspended"
    membership = Membership.objects.filter(user_id=session.user_id, tenant_id=session.tenant_id).first()
    if membership is None or not role_at_least(membership.role, CONSOLE_ROLE):
        return "the user no longer has access"
    return None


class ConsoleTokenPlugin(BasePlugin):
    """websockify token plugin: `--token-plugin compute.console.ConsoleTokenPlugin`."""

    def lookup(self, token):
        session = redeem(token)
        return session.target if session else None


class ConsoleProxyHandler(ProxyRequestHandler):
    """websockify's handler, plus: the session is kept, watched, and cut when it must end."""

    check_interval = 2.0

    def get_target(self, target_plugin):
        token = (parse_qs(urlparse(self.path).query).get("token") or [None])[0]
        self.console_session = redeem(token) if token else None
        if self.console_session is None:
            raise self.server.EClose("Invalid, used or expired console token")
        reason = refusal(self.console_session)
        if reason:
            raise self.server.EClose(f"Console refused: {reason}")
        return self.console_session.target

    def do_proxy(self, target):
        stop = threading.Event()
        watchdog = threading.Thread(target=self._watch, args=(target, stop), daemon=True)
        watchdog.start()
        try:
            super().do_proxy(target)
        finally:
            stop.set()

    def _watch(self, target: socket.socket, stop: threading.Event) -> None:
        try:
            while not stop.wait(self.check_interval):
                reason = refusal(self.console_session)
                if reason:
                    self.log_message("closing console of %s: %s", self.console_session.instance_id, reason)
                    # The proxy loop sees the target close and ends the WebSocket cleanly.
                    try:
                        target.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
        finally:
            connection.close()
