"""Dependencies the routes share, named once."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Security
from fastapi.security import APIKeyHeader

from docpipe.config import Settings, get_settings
from docpipe.errors import Forbidden
from docpipe.models import Tenant
from docpipe.tenants import authenticate

# A security scheme, not a plain header parameter: Swagger UI's Authorize button then
# sends the key with every request it tries. Missing keys are docpipe's 401, not FastAPI's.
API_KEY = APIKeyHeader(
    name="X-API-Key",
    scheme_name="ApiKey",
    description="The tenant's API key (`docpipe tenant create` prints it once).",
    auto_error=False,
)


def current_tenant(x_api_key: Annotated[str | None, Security(API_KEY)]) -> Tenant:
    return authenticate(x_api_key)


TenantDep = Annotated[Tenant, Depends(current_tenant)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def named_tenant(
    tenant: TenantDep,
    tenant_id: Annotated[
        str | None,
        Query(
            alias="tenantId",
            description="Optional: the key already names its tenant. If given, it must be "
            "the key's own (else 403).",
            examples=["acme"],
        ),
    ] = None,
) -> Tenant:
    """The key's tenant, which a tenantId in the request, if any, must name."""
    if tenant_id is not None and tenant_id != tenant.id:
        raise Forbidden("tenantId is not the API key's tenant")
    return tenant


NamedTenantDep = Annotated[Tenant, Depends(named_tenant)]
