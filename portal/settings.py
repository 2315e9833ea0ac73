"""Settings, all read from the environment with defaults that run on a fresh checkout."""

import shlex
from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

from portal.env import env_bool, env_int, env_list, env_str, running_in_a_vm, secret_key

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))

SECRET_KEY = secret_key(VAR_DIR / "secret_key")
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and ReDoc as static files: no CDN
    "django_htmx",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "tenants",
    "compute",
    "billing",
    "portal",
]

MIDDLEWARE = [
    # First: the request id is known to every later line, and the time counts every layer.
    "portal.logs.RequestContextMiddleware",
    "portal.metrics.MetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "portal.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # After sessions, before CommonMiddleware: the language cookie, then Accept-Language.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # A logged-in user's saved language wins over the cookie (portal/i18n.py).
    "portal.i18n.UserLanguageMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
AUTH_USER_MODEL = "tenants.User"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # The portal's templates first: they override allauth's (an app listed before portal).
        "DIRS": [BASE_DIR / "portal" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# PostgreSQL only: the hot paths are written-out PostgreSQL (a claim with RETURNING, a state
# and its log row in one statement with data-modifying WITH clauses). The default is the local
# server `make run` starts; `manage.py runportal` creates the database when it is missing.
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/cloudportal"),
        # Kept between requests (a new PostgreSQL connection costs more than most requests).
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
# Prefix for every key this deployment writes to Redis, so test runs and deployments sharing
# one server never see each other's cache entries, console tokens or queues.
REDIS_PREFIX = env_str("REDIS_PREFIX", "portal")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": REDIS_PREFIX,
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]

# English and Simplified Chinese. The portal's catalogue lives in the app that owns the pages
# (portal/locale, built from portal/ alone, so strings of compute/billing/tenants stay out of
# it); allauth and Django bring their own zh_Hans catalogues.
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "portal" / "locale", BASE_DIR / "base" / "locale"]
LANGUAGE_COOKIE_NAME = "portal_language"
LANGUAGE_COOKIE_AGE = 365 * 24 * 3600
LANGUAGE_COOKIE_SAMESITE = "Lax"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
# Front-end libraries come from the npm registry (package.json); only their dist folders are
# exposed as static files, never copied into the repository.
NODE_MODULES = BASE_DIR / "node_modules"
STATICFILES_DIRS = [
    (prefix, NODE_MODULES / sub)
    for prefix, sub in [
        ("vendor/bootstrap", "bootstrap/dist"),
        ("vendor/htmx", "htmx.org/dist"),
        ("vendor/chartjs", "chart.js/dist"),
        ("vendor/novnc", "@novnc/novnc"),
    ]
    if (NODE_MODULES / sub).exists()
]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
MEDIA_ROOT = VAR_DIR / "media"

# Security: HSTS whenever debug is off; cookies marked Secure where the site is https (over http
# a browser never sends them back): SECURE_COOKIES, else an https PORTAL_BASE_URL, else whenever
# debug is off. `runportal`, which serves plain http, turns them off unless told otherwise.
_BASE_URL = env_str("PORTAL_BASE_URL", "")
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", _BASE_URL.startswith("https://") if _BASE_URL else not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SECURE_HSTS_SECONDS = 0 if DEBUG else env_int("SECURE_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
# TLS is normally terminated by the proxy in front; it says so with this header.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)

# E-mail: a file backend by default so `make run` shows verification links without SMTP.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.filebased.EmailBackend")
EMAIL_FILE_PATH = VAR_DIR / "mail"
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "cloud@localhost")
PORTAL_BASE_URL = env_str("PORTAL_BASE_URL", "http://127.0.0.1:8000")
# What customers see the portal called: page titles, e-mail subjects and bodies.
PORTAL_NAME = env_str("PORTAL_NAME", "Cloud Portal")

# django-allauth: e-mail is the login, verified before first login.
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_CONFIRM_EMAIL_ON_GET = False
# Confirming the address in the browser that signed up logs that browser in.
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_ADAPTER = "tenants.adapters.AccountAdapter"
ACCOUNT_RATE_LIMITS = {
    "login_failed": env_str("LOGIN_FAILED_RATE", "10/m/ip,5/5m/key"),
    "signup": "20/m/ip",
    "reset_password": "20/m/ip,5/m/key",
    "confirm_email": "1/3m/key",
}
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = env_str("MFA_TOTP_ISSUER", "Cloud Portal")
LOGIN_REDIRECT_URL = "/"
LOGIN_URL = "/accounts/login/"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "portal.api.auth.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["portal.api.permissions.TenantRolePermission"],
    "DEFAULT_PAGINATION_CLASS": "portal.api.paging.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "portal.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "portal.api.errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["portal.api.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["portal.api.inputs.JSONParser"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Cloud Portal API",
    "DESCRIPTION": "Self-service virtual machines: tenants, instances, usage and invoices.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models have a `status` or `state`; name each choice set after its model.
    "ENUM_NAME_OVERRIDES": {
        "TenantStatusEnum": "tenants.models.Tenant.Status",
        "HostStatusEnum": "compute.models.Host.Status",
        "InstanceActionStatusEnum": "compute.models.InstanceAction.Status",
        "ImageStateEnum": "compute.models.Image.State",
        "InstanceStateEnum": "compute.models.InstanceState",
        "InvoiceStateEnum": "billing.models.Invoice.State",
        "RuleDirectionEnum": "compute.models.SecurityGroupRule.Direction",
        "RuleProtocolEnum": "compute.models.SecurityGroupRule.Protocol",
    },
}

# Tenant policy defaults; operators override quotas per tenant in the database.
DEFAULT_QUOTA = {
    "instances": env_int("QUOTA_INSTANCES", 10),
    "vcpus": env_int("QUOTA_VCPUS", 20),
    "memory_mb": env_int("QUOTA_MEMORY_MB", 40960),
    "disk_gb": env_int("QUOTA_DISK_GB", 500),
}
INVITATION_TTL_HOURS = env_int("INVITATION_TTL_HOURS", 72)

# The EC2-compatible API (/ec2/): the one region it answers for (its zone is the region + "a"),
# and how far a request's X-Amz-Date may be from the server's clock.
EC2_REGION = env_str("EC2_REGION", "portal-1")
EC2_CLOCK_SKEW_SECONDS = env_int("EC2_CLOCK_SKEW_SECONDS", 300)

# Celery: late acks so a worker that dies mid-task leaves the message to be redelivered. The
# Redis visibility timeout must exceed the longest task, or Redis hands the same message to
# a second worker while the first still runs it; Celery reads it from all three places below.
CELERY_VISIBILITY_TIMEOUT = env_int("CELERY_VISIBILITY_TIMEOUT", 6 * 3600)
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", REDIS_URL)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_VISIBILITY_TIMEOUT,
    "global_keyprefix": f"{REDIS_PREFIX}:",
}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_VISIBILITY_TIMEOUT,
    "global_keyprefix": f"{REDIS_PREFIX}:",
}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's Django fixup closes every database connection before and after each task unless
# this is set, so each task paid for a new PostgreSQL connection (a server process forked). It
# now closes them every this many tasks; between tasks portal.celery checks them as Django
# does between requests (CONN_MAX_AGE, errors, the health check). 0 restores a close per task.
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1000)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_DEFAULT_QUEUE", f"{REDIS_PREFIX}.control")
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)


# LOG_FORMAT=json: one JSON object a line, with the request id, tenant and instance (portal/logs.py).
LOG_FORMAT = env_str("LOG_FORMAT", "text")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "portal.logs.ContextFilter"}},
    "formatters": {"json": {"()": "portal.logs.JsonFormatter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["context"],
            **({"formatter": "json"} if LOG_FORMAT == "json" else {}),
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# Operations (docs/operations.md). /metrics and /healthz/ready answer staff users, and anyone
# connecting straight (not through the proxy) from these networks: Prometheus, load balancers.
METRICS_ALLOWED_NETWORKS = env_list("METRICS_ALLOWED_NETWORKS", ["127.0.0.0/8", "::1/128"])
# Readiness: how long each hypervisor and service may take to answer, and how old beat's last
# tick (portal.tasks.beat_tick, every BEAT_TICK_SECONDS) may be.
READINESS_TIMEOUT_SECONDS = env_int("READINESS_TIMEOUT_SECONDS", 3)
BEAT_TICK_SECONDS = env_int("BEAT_TICK_SECONDS", 30)
BEAT_STALE_SECONDS = env_int("BEAT_STALE_SECONDS", 180)

# Custom instance sizes: (min, max) of each dimension, and the SLA they come with.
CUSTOM_SIZE_LIMITS = {
    "vcpus": (1, env_int("CUSTOM_MAX_VCPUS", 16)),
    "memory_mb": (128, env_int("CUSTOM_MAX_MEMORY_MB", 65536)),
    "disk_gb": (1, env_int("CUSTOM_MAX_DISK_GB", 1000)),
    "bandwidth_mbit": (1, env_int("CUSTOM_MAX_BANDWIDTH_MBIT", 1000)),
    "traffic_gb": (0, env_int("CUSTOM_MAX_TRAFFIC_GB", 20000)),
}
CUSTOM_SIZE_SLA_PERCENT = env_str("CUSTOM_SIZE_SLA_PERCENT", "99.500")
SCHEDULER_WEIGHER = env_str("SCHEDULER_WEIGHER", "spread")  # spread | pack
MAX_USER_DATA_BYTES = 64 * 1024
# The most instances one create makes (the API's `count`, the create page's "How many").
BULK_CREATE_MAX = env_int("BULK_CREATE_MAX", 20)
INSTANCE_STOP_TIMEOUT = env_int("INSTANCE_STOP_TIMEOUT", 60)
HOST_HEARTBEAT_SECONDS = env_int("HOST_HEARTBEAT_SECONDS", 30)
HOST_DOWN_AFTER_SECONDS = env_int("HOST_DOWN_AFTER_SECONDS", 120)
# A silent host's hypervisor is asked directly before the host is called down; this long.
HYPERVISOR_PROBE_SECONDS = env_int("HYPERVISOR_PROBE_SECONDS", 10)
# Fencing a host declared down (compute.evacuation): a command that powers it off for sure
# (IPMI, a PDU, a cloud's API), run without a shell, `{host}` and `{uri}` in its words replaced by
# the host's name and libvirt URI; exit status 0 means fenced. Only a fenced host's HA instances
# are started elsewhere; without a command they wait for their host, as the others do.
HOST_FENCE_COMMAND = shlex.split(env_str("HOST_FENCE_COMMAND", ""))
HOST_FENCE_TIMEOUT = env_int("HOST_FENCE_TIMEOUT", 60)
# A live migration of a disk in a shared pool copies nothing. libvirt allows that only where it
# knows the pool's filesystem to be shared (NFS, GFS2, OCFS2, ...) and refuses it as unsafe
# elsewhere: a directory the hosts share some other way (a bind mount, as the test suite's
# hosts do, or a filesystem libvirt does not recognise). True tells libvirt to go ahead
# (VIR_MIGRATE_UNSAFE) for such disks, which the portal has seen on the target first.
LIVE_MIGRATION_TRUST_SHARED_POOLS = env_bool("LIVE_MIGRATION_TRUST_SHARED_POOLS", False)
# Instance leases (compute.leases): a dead worker's lease is gone this long after it died, and
# its work is queued again once no task has held the instance for REAP_AFTER_SECONDS.
LEASE_SECONDS = env_int("LEASE_SECONDS", 30)
REAP_AFTER_SECONDS = env_int("REAP_AFTER_SECONDS", 30)
REAP_BATCH = env_int("REAP_BATCH", 1000)
# DHCP leases on the hosts' networks; a deleted instance's address rests a little longer than
# one lease before it is given out again (the DHCP server remembers the old guest until then).
DHCP_LEASE_SECONDS = env_int("DHCP_LEASE_SECONDS", 600)
IP_REST_SECONDS = env_int("IP_REST_SECONDS", DHCP_LEASE_SECONDS + 60)
# Fault tests only: a worker pauses this long before the step "<action>:<step>" so that a
# test can kill it there. Empty in every real deployment.
FAULT_PAUSE_AT = env_str("FAULT_PAUSE_AT", "")
FAULT_PAUSE_SECONDS = env_int("FAULT_PAUSE_SECONDS", 120)
IMAGE_STORE = Path(env_str("IMAGE_STORE", str(VAR_DIR / "images")))
# The largest image file an operator may import (upload or URL), in bytes.
IMAGE_MAX_BYTES = env_int("IMAGE_MAX_BYTES", 8 * 1024**3)
# KVM is used where the host offers it and this allows it; nested KVM fails on some hosts.
ALLOW_KVM = env_bool("ALLOW_KVM", not running_in_a_vm())
CELERY_BEAT_SCHEDULE = {
    "hosts-heartbeat": {"task": "compute.tasks.check_hosts", "schedule": HOST_HEARTBEAT_SECONDS},
    "hosts-power-sync": {"task": "compute.tasks.sync_all_hosts", "schedule": 60.0},
    "instances-reap-stalled": {"task": "compute.tasks.reap_stalled", "schedule": 15.0},
    "hosts-orphans": {"task": "compute.tasks.report_all_orphans", "schedule": 3600.0},
    "idempotency-keys-expire": {"task": "compute.tasks.expire_keys", "schedule": 3600.0},
    "beat-tick": {"task": "portal.tasks.beat_tick", "schedule": float(BEAT_TICK_SECONDS)},
}

# The host `make run` registers on first start; when it cannot be used, the run falls back to
# libvirt's test driver and says so.
LIBVIRT_DEFAULT_URI = env_str("LIBVIRT_DEFAULT_URI", "qemu:///system")
LIBVIRT_POOL = env_str("LIBVIRT_POOL", "portal")
LIBVIRT_POOL_DIR = Path(env_str("LIBVIRT_POOL_DIR", "/var/lib/libvirt/portal"))
LIBVIRT_NETWORK = env_str("LIBVIRT_NETWORK", "portal-net")
# How the network `make run` makes reaches the outside: nat (guests reach the Internet through
# the host), isolated (guests reach only each other and the host's DHCP and DNS; the tests'),
# or route (the operator's public block, routed to the host; see docs/operations.md).
LIBVIRT_NETWORK_MODE = env_str("LIBVIRT_NETWORK_MODE", "nat")
# Instances are named <instance>.<tenant>.<zone> in their host network's DNS.
PORTAL_DNS_ZONE = env_str("PORTAL_DNS_ZONE", "cloud.internal")
# Host addresses no guest may send anything to, beside its gateway and a host's VNC address
# (management addresses, the metadata of other services); one per entry, comma-separated.
FIREWALL_PROTECTED_ADDRESSES = env_list("FIREWALL_PROTECTED_ADDRESSES", [])
# Rules one security group may hold.
SECURITY_GROUP_MAX_RULES = env_int("SECURITY_GROUP_MAX_RULES", 50)
# None: decided by probing the kernel (compute.localhost.kernel_can_shape).
LIBVIRT_SHAPING = env_bool("LIBVIRT_SHAPING", False) if env_str("LIBVIRT_SHAPING", "") else None

if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise ImproperlyConfigured(
        f"DATABASE_URL must name a PostgreSQL database (postgres://...); this one is {DATABASES['default']['ENGINE']}."
    )

# Console: websockify with compute.console's plugin; tokens live a minute and open one session.
CONSOLE_TOKEN_TTL = env_int("CONSOLE_TOKEN_TTL", 60)
CONSOLE_MAX_SESSION_SECONDS = env_int("CONSOLE_MAX_SESSION_SECONDS", 4 * 3600)
CONSOLE_PROXY_BIND = env_str("CONSOLE_PROXY_BIND", "127.0.0.1:6080")
CONSOLE_PROXY_URL = env_str("CONSOLE_PROXY_URL", "ws://127.0.0.1:6080")
# How long the console page waits for a session to open before it says so and offers Reconnect.
CONSOLE_CONNECT_SECONDS = env_int("CONSOLE_CONNECT_SECONDS", 30)
CONSOLE_ALLOWED_ORIGINS = env_list("CONSOLE_ALLOWED_ORIGINS", [PORTAL_BASE_URL])
ACCOUNT_USER_DISPLAY = "tenants.adapters.user_display"

# Billing: metering cadence (seconds) and its beat entries.
METERING_SECONDS = env_int("METERING_SECONDS", 60)
# E-mail notices (invoices, suspension, instances in error, host outages): how often beat looks
# for events not yet told, and how far back (older events are never mailed, e.g. after an upgrade).
NOTICE_SECONDS = env_int("NOTICE_SECONDS", 60)
NOTICE_LOOKBACK_HOURS = env_int("NOTICE_LOOKBACK_HOURS", 72)
CELERY_BEAT_SCHEDULE.update(
    {
        "billing-meter": {"task": "billing.tasks.meter_all_hosts", "schedule": float(METERING_SECONDS)},
        "billing-aggregate": {"task": "billing.tasks.aggregate_recent_hours", "schedule": 300.0},
        "billing-invoice-month": {
            "task": "billing.tasks.invoice_last_month",
            "schedule": crontab(minute=30, hour=0, day_of_month=1),
        },
        "billing-suspended-sweep": {"task": "billing.tasks.stop_suspended_instances", "schedule": 300.0},
        "billing-overdue": {"task": "billing.tasks.suspend_overdue_tenants", "schedule": crontab(minute=15, hour=1)},
        "notices-send": {"task": "billing.tasks.send_notices", "schedule": float(NOTICE_SECONDS)},
    }
)
