from __future__ import annotations

import os

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connections
from websockify.auth_plugins import ExpectOrigin
from websockify.websocketproxy import WebSocketProxy

from compute.console import ConsoleProxyHandler, ConsoleTokenPlugin
from portal import metrics


class CountedConsoleHandler(ConsoleProxyHandler):
    """compute's handler, counted in the console sessions gauge while a session lasts. Each
    connection runs in a child of its own: its gauge file goes when the session ends."""

    def do_proxy(self, target):
        metrics.CONSOLE_SESSIONS.inc()
        try:
            super().do_proxy(target)
        finally:
            metrics.CONSOLE_SESSIONS.dec()
            if metrics.multiprocess_dir():
                metrics.multiprocess.mark_process_dead(os.getpid())


class Command(BaseCommand):
    help = "Run the noVNC console proxy: websockify with the portal's token plugin."

    def add_arguments(self, parser):
        parser.add_argument("--bind", default=settings.CONSOLE_PROXY_BIND)

    def handle(self, *args, bind: str, **options):
        host, _, port = bind.rpartition(":")
        # Each connection runs in a forked child; none may inherit this process's DB socket.
        connections.close_all()
        server = WebSocketProxy(
            RequestHandlerClass=CountedConsoleHandler,
            listen_host=host.strip("[]"),
            listen_port=int(port),
            token_plugin=ConsoleTokenPlugin(""),
            auth_plugin=ExpectOrigin(" ".join(o.rstrip("/") for o in settings.CONSOLE_ALLOWED_ORIGINS)),
            heartbeat=30,
        )
        # Without this websockify answers plain GETs with files from the working directory.
        server.only_upgrade = True
        self.stdout.write(f"Console proxy on {bind}, origins {settings.CONSOLE_ALLOWED_ORIGINS}")
        server.start_server()
