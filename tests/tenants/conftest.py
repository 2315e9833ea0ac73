import uuid

import pytest

from tests.ui.conftest import make_instance  # noqa: F401 (a fixture the notice tests share)


@pytest.fixture(autouse=True)
def _cache_per_test(settings):
    """A cache key prefix of its own for each test.

    allauth counts signups, failed logins and resets per IP in the cache, and every test
    client comes from 127.0.0.1; with one prefix per run, the tests would throttle each other.
    """
    cache = dict(settings.CACHES["default"])
    cache["KEY_PREFIX"] = f"{cache['KEY_PREFIX']}-{uuid.uuid4().hex[:8]}"
    settings.CACHES = {"default": cache}
