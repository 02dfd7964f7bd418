"""Dependencies the routes share, named once."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Query

from docpipe.config import Settings, get_settings
from docpipe.errors import Forbidden
from docpipe.models import Tenant
from docpipe.tenants import authenticate


def current_tenant(
    x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None,
) -> Tenant:
    return authenticate(x_api_key)


TenantDep = Annotated[Tenant, Depends(current_tenant)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def named_tenant(
    tenant: TenantDep,
    tenant_id: Annotated[
        str | None,
        Query(alias="tenantId", description="Must be the API key's tenant; default: that one."),
    ] = None,
) -> Tenant:
    """The tenant the request names, which must be the API key's own (the key's by default)."""
    if tenant_id is not None and tenant_id != tenant.id:
        raise Forbidden("tenantId is not the API key's tenant")
    return tenant


NamedTenantDep = Annotated[Tenant, Depends(named_tenant)]
