from __future__ import annotations

import os
import threading

from django.core.management.base import BaseCommand, CommandError
from prometheus_client import CollectorRegistry, multiprocess, start_http_server


class Command(BaseCommand):
    help = (
        "Serve the metrics that this machine's processes wrote to PROMETHEUS_MULTIPROC_DIR (a "
        "compute host's Celery workers, which have no web server of their own) on --bind."
    )

    def add_arguments(self, parser):
        parser.add_argument("--bind", default=os.environ.get("METRICS_EXPORTER_BIND", "127.0.0.1:9464"))

    def handle(self, *args, bind: str, **options):
        path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not path:
            raise CommandError("PROMETHEUS_MULTIPROC_DIR is not set: there is nothing to serve.")
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)
        host, _, port = bind.rpartition(":")
        # The fleet's state (hosts, instances, queues) is the control plane's /metrics: here only
        # what this machine's processes counted.
        start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=registry)
        self.stdout.write(f"Metrics of {path} on http://{bind}/metrics")
        threading.Event().wait()
