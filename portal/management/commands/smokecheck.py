from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import RequestFactory

from billing.models import Invoice, UsageRecord
from compute.models import Host, Image, Instance, InstanceAction
from portal.views.public import healthz
from tenants.models import Tenant, User

COUNTED = {
    "users": User,
    "tenants": Tenant,
    "hosts": Host,
    "images": Image,
    "instances": Instance,
    "instance_actions": InstanceAction,
    "usage_records": UsageRecord,
    "invoices": Invoice,
}


class Command(BaseCommand):
    help = (
        "Check a database the portal is about to use (after a restore or an upgrade): every "
        "migration applied, the main tables readable, the health view answering. Prints the row counts "
        "as JSON; exits non-zero when a check fails."
    )

    def handle(self, *args, **options):
        executor = MigrationExecutor(connection)
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
        if pending:
            names = ", ".join(f"{m.app_label}.{m.name}" for m, _ in pending)
            raise CommandError(f"Migrations not applied: {names} (run manage.py migrate)")
        counts = {name: model.objects.count() for name, model in COUNTED.items()}
        # The view itself, not through the URL and host checks: those are the deployment's.
        response = healthz(RequestFactory().get("/healthz"))
        if response.status_code != 200:
            raise CommandError(f"/healthz answered {response.status_code}")
        self.stdout.write(json.dumps({"ok": True, "counts": counts}))
