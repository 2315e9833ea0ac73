import pytest

from tests.api.routes import FACTORIES, Route, factory_hint

# The operator-only and public routes serve rows that the shared fixtures already make (or,
# for operators' views of tenant rows such as instances, that FACTORIES makes for tenant A).
SHARED_ROWS = {"Host": "host", "Flavor": "flavor", "Image": "image"}


@pytest.fixture
def owned(request, alice, tenant_a):
    """A row that `route` serves: owned by tenant A for tenant-scoped routes."""

    def make(route: Route):
        if not route.tenant_scoped and route.model.__name__ in SHARED_ROWS:
            return request.getfixturevalue(SHARED_ROWS[route.model.__name__])
        factory = FACTORIES.get(route.model)
        if factory is None:
            pytest.fail(factory_hint(route))
        return factory(request, alice, tenant_a)

    return make
