"""Shared fixtures: three personas, simulated hosts, an image, a flavor, API clients.

alice owns tenant A, bob is a member of A, vera a viewer of A, charlie owns tenant B.
"""

from __future__ import annotations

import os
import uuid
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from compute.hosts import host_register
from compute.models import Flavor, Image
from portal.celery import app as celery_app
from tenants import services as tenant_services
from tenants.access import Actor
from tenants.models import ApiToken, Membership, Role, User
from tests.simulated import write_host

RUN_ID = uuid.uuid4().hex[:8]
# Everything this run puts in Redis (queued tasks, results, cache entries, console tokens)
# goes under one prefix: settings.REDIS_PREFIX (below), and the Celery app's key prefix, which
# it read from settings at import and applies when it first connects, so setting it here,
# before any test runs, is enough. Worker and proxy processes get REDIS_PREFIX=RUN_PREFIX.
RUN_PREFIX = f"test-{RUN_ID}"
celery_app.conf.broker_transport_options = {
    **celery_app.conf.broker_transport_options,
    "global_keyprefix": f"{RUN_PREFIX}:",
}
celery_app.conf.result_backend_transport_options = {
    **celery_app.conf.result_backend_transport_options,
    "global_keyprefix": f"{RUN_PREFIX}:",
}


# Under xdist, the tests that boot real guests run in three lanes, each lane in one process,
# its tests one after the other: the two cores emulate the guests (TCG), and four guest tests at
# once slowed each other down several-fold (a Debian test took 1,146 s instead of 290). Each
# lane is about nine minutes of a serial run (the seconds below), led by a Debian test, the
# longest; the other processes run everything else meanwhile. A new module of guest tests
# joins the shortest lane.
GUEST_LANES = {
    "tests/e2e/test_debian_guest.py": "guests-1",  # 293 s
    "tests/e2e/test_rescue.py": "guests-1",  # 194 s
    "tests/e2e/test_network_isolation.py": "guests-1",  # 99 s (three tiny guests)
    "tests/multihost/test_consolidation.py": "guests-1",  # two hosts, two guests, one live move
    "tests/multihost/test_bench_live_migration.py": "guests-1",  # about 70 s: the bench's own two hosts
    "tests/e2e/test_debian_password.py": "guests-2",  # 227 s
    "tests/multihost/test_libvirtd_restart.py": "guests-2",  # 202 s
    "tests/e2e/test_real_vm.py": "guests-2",  # 137 s
    "tests/multihost/test_evacuation.py": "guests-2",  # 266 s on a loaded machine (two hosts, two guests)
    "tests/e2e/test_dhcp_capacity.py": "guests-2",  # about 30 s (no guest: 21 DHCP clients in namespaces)
    "tests/e2e/test_faults.py": "guests-3",  # 340 s
    "tests/e2e/test_address_churn.py": "guests-3",  # 133 s
    "tests/e2e/test_iso_install.py": "guests-3",  # 85 s
    "tests/multihost/test_migration.py": "guests-3",  # about 190 s (two second hosts per test)
    "tests/multihost/test_migration_faults.py": "guests-3",  # two hosts, one guest, moved twice over
}


def pytest_xdist_make_scheduler(config, log):
    """xdist's scheduler by scope, with a lane as the scope of its tests and each other test a
    scope of its own. (`xdist_group` marks would do it, but pytest-xdist 3.8 marks a group by
    rewriting `item._nodeid`, which pytest 9 no longer reads: they are silently ignored.)"""
    from xdist.scheduler import LoadScopeScheduling

    class LaneScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return GUEST_LANES.get(nodeid.split("::")[0], nodeid)

    return LaneScheduling(config, log)


def start_order(item: pytest.Item) -> int:
    """Longest first, so that under xdist they overlap everything else instead of being what
    the run waits for at the end: a Debian guest boots for minutes under TCG, other real guests
    and the second libvirtd for tens of seconds, real Celery workers and Chromium for seconds."""
    fixtures = getattr(item, "fixturenames", ())
    if "debian_image" in fixtures:
        return 0
    if item.get_closest_marker("e2e"):
        return 1
    if item.get_closest_marker("worker") or "chromium" in fixtures:
        return 2
    return 3


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config, items):
    yield  # after pytest-django's own order (tests without real commits first)
    items.sort(key=start_order)  # stable: files keep their order within each tier


@pytest.fixture(autouse=True)
def _isolated_settings(settings, tmp_path):
    settings.IMAGE_STORE = tmp_path / "images"
    settings.IMAGE_STORE.mkdir()
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.REDIS_PREFIX = RUN_PREFIX
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            "KEY_PREFIX": RUN_PREFIX,
        }
    }
    settings.INSTANCE_STOP_TIMEOUT = 5


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    # A fast hasher for the users the fixtures make: Django's default costs ~0.1 s per user,
    # and logging in checks a password the same way with any hasher.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def make_user(email: str, *, staff: bool = False) -> User:
    user = User.objects.create_user(username=email, email=email, password="correct horse battery")
    user.is_staff = staff
    user.save(update_fields=["is_staff"])
    return user


@pytest.fixture
def alice(db):
    return make_user("alice@example.com")


@pytest.fixture
def tenant_a(alice):
    return tenant_services.tenant_create(name="Tenant A", owner=alice)


@pytest.fixture
def bob(tenant_a):
    user = make_user("bob@example.com")
    Membership.objects.create(user=user, tenant=tenant_a, role=Role.MEMBER)
    return user


@pytest.fixture
def vera(tenant_a):
    user = make_user("vera@example.com")
    Membership.objects.create(user=user, tenant=tenant_a, role=Role.VIEWER)
    return user


@pytest.fixture
def charlie(db):
    return make_user("charlie@example.com")


@pytest.fixture
def tenant_b(charlie):
    return tenant_services.tenant_create(name="Tenant B", owner=charlie)


@pytest.fixture
def operator(db):
    return make_user("ops@example.com", staff=True)


def actor(user: User, tenant) -> Actor:
    membership = Membership.objects.get(user=user, tenant=tenant)
    return Actor(user, tenant, membership.role)


def client_for(user: User | None = None, *, token: str | None = None) -> APIClient:
    client = APIClient()
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    elif user:
        client.force_authenticate(user)
    return client


@pytest.fixture
def api():
    return client_for


def token_for(user: User, tenant, scope: str = ApiToken.Scope.WRITE) -> str:
    _token, secret = tenant_services.token_create(
        actor=actor(user, tenant), name=f"t-{uuid.uuid4().hex[:6]}", scope=scope
    )
    return secret


@pytest.fixture(autouse=True)
def _purge_host_queues():
    """Host names, and so queue names, repeat from test to test within a run (sim1-<run>...):
    whatever a test queued and nobody ran is dropped when it ends, or the next test's worker
    would run it (and its queue-depth figures would count it)."""
    yield
    from tests.processes import redis_client

    client = redis_client()
    keys = list(client.scan_iter(match=f"{RUN_PREFIX}:host.*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def simulated_host(db, tmp_path):
    """A factory of hosts on libvirt's test driver, each with its own pool and network."""
    counter = iter(range(1, 10000))

    def make(name: str | None = None, **size):
        n = next(counter)
        args = write_host(tmp_path, name=name or f"sim{n}-{RUN_ID}", subnet=n, **size)
        return host_register(**args)

    return make


@pytest.fixture
def host(simulated_host):
    return simulated_host()


@pytest.fixture
def image(settings):
    (settings.IMAGE_STORE / "tiny.qcow2").write_bytes(b"QFI\xfb" + b"\0" * 508)
    return Image.objects.create(
        name="Tiny Linux",
        os_family="linux",
        os_version="1",
        size_bytes=512,
        source_path="tiny.qcow2",
        min_disk_gb=1,
        min_memory_mb=64,
    )


@pytest.fixture
def flavor(db):
    return Flavor.objects.create(
        name="s1.small",
        vcpus=1,
        memory_mb=512,
        disk_gb=10,
        bandwidth_mbit=100,
        traffic_gb=1000,
        sla_percent=Decimal("99.9"),
    )


@pytest.fixture
def eager(transactional_db):
    """Run each queued task in this process as soon as its transaction commits.

    Needs real commits (transactional_db), since tasks are queued with on_commit.
    """
    before = celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    yield
    # Restored, or a later test's explicit apply() would see propagation switched on.
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = before


@pytest.fixture(scope="session", autouse=True)
def _sweep_run_keys():
    """Leave nothing of this run in Redis: tasks nobody ran, results, cache, console tokens."""
    yield
    from tests.processes import redis_client

    client = redis_client()
    # Also the per-test cache prefixes some suites derive from it ("<prefix>-<hex>").
    keys = list(client.scan_iter(match=f"{RUN_PREFIX}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def start_worker(transactional_db, settings, tmp_path):
    """Start real Celery workers, each serving one queue; all stopped and reaped at teardown."""
    from tests.processes import stop_workers, worker_starter

    start, started = worker_starter(settings, tmp_path)
    yield start
    stop_workers(started)
