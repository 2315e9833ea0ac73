from __future__ import annotations

import os
import secrets

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from compute.models import Host
from portal.database import ensure_database
from portal.runner import Proc, fresh_metrics_dir, python_bin, supervise
from tenants.models import User
from tenants.services import personal_tenant_for

OPERATOR_EMAIL = "operator@localhost"


def served_over_http(environ) -> dict[str, str]:
    """Gunicorn here speaks plain http: cookies marked Secure would never come back, and nobody
    could log in. So they are off, unless the environment says the site is https (a TLS proxy
    in front, with SECURE_COOKIES or an https PORTAL_BASE_URL)."""
    if environ.get("SECURE_COOKIES", "").strip() or environ.get("PORTAL_BASE_URL", "").startswith("https://"):
        return {}
    return {"SECURE_COOKIES": "0"}


class Command(BaseCommand):
    help = "Migrate, seed a demo catalogue, create an operator, and run web, worker and beat together."

    def add_arguments(self, parser):
        parser.add_argument("--bind", default=os.environ.get("PORTAL_BIND", "127.0.0.1:8000"))

    def handle(self, *args, bind: str, **options):
        if ensure_database():
            self.stdout.write(f"Created the database {settings.DATABASES['default']['NAME']}")
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        call_command("seed_demo")
        password = self._operator_password()
        queues = ",".join([settings.CELERY_TASK_DEFAULT_QUEUE, *Host.objects.values_list("queue", flat=True)])
        # Web, worker, beat and console proxy write their metrics there; /metrics adds them up.
        metrics_dir = fresh_metrics_dir(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or str(settings.VAR_DIR / "metrics"))
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
            **served_over_http(os.environ),
        }
        procs = [
            Proc(
                "web",
                [
                    python_bin("gunicorn"),
                    "portal.wsgi",
                    # Its hooks (a worker's metrics files when it exits); the flags below win.
                    "--config",
                    str(settings.BASE_DIR / "deploy" / "gunicorn.conf.py"),
                    "--bind",
                    bind,
                    "--workers",
                    "2",
                    "--threads",
                    "4",
                    "--access-logfile",
                    "-",
                    # Done before the supervisor's SIGKILL (runner.GRACE_SECONDS).
                    "--graceful-timeout",
                    "5",
                ],
            ),
            # Threads, not processes: a host on libvirt's test driver lives in the memory of the
            # process that opened it, so all work for it must run in one process.
            Proc(
                "worker",
                [
                    python_bin("celery"),
                    "-A",
                    "portal",
                    "worker",
                    "-Q",
                    queues,
                    "-P",
                    "threads",
                    "-c",
                    "4",
                    "-l",
                    "info",
                ],
            ),
            Proc("console", [python_bin("python"), str(settings.BASE_DIR / "manage.py"), "consoleproxy"]),
            Proc(
                "beat",
                [
                    python_bin("celery"),
                    "-A",
                    "portal",
                    "beat",
                    "-l",
                    "info",
                    "-s",
                    str(settings.VAR_DIR / "celerybeat-schedule"),
                ],
            ),
        ]
        self.stdout.write(self.style.SUCCESS(f"\nCloud portal on http://{bind}/"))
        self.stdout.write(f"  operator: {OPERATOR_EMAIL}  password: {password}  (admin: http://{bind}/admin/)")
        self.stdout.write(f"  console proxy: {settings.CONSOLE_PROXY_URL}")
        self.stdout.write(f"  e-mails (verification links) are written to {settings.EMAIL_FILE_PATH}/")
        self.stdout.write("  Ctrl-C stops everything.\n")
        raise SystemExit(supervise(procs, env))

    def _operator_password(self) -> str:
        """The operator's password, made on first run and kept in var/ (mode 0600)."""
        path = settings.VAR_DIR / "operator-password"
        user = User.objects.filter(email=OPERATOR_EMAIL).first()
        if user is not None and path.exists():
            return path.read_text().strip()
        password = secrets.token_urlsafe(12)
        if user is None:
            user = User.objects.create_superuser(username=OPERATOR_EMAIL, email=OPERATOR_EMAIL, password=password)
        else:
            user.set_password(password)
            user.save(update_fields=["password"])
        from allauth.account.models import EmailAddress

        EmailAddress.objects.update_or_create(
            user=user, email=OPERATOR_EMAIL, defaults={"verified": True, "primary": True}
        )
        personal_tenant_for(user)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(password)
        return password
