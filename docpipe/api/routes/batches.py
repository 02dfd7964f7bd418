"""Batches by id, and a tenant's batches."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from docpipe import batches
from docpipe.api.deps import NamedTenantDep, TenantDep
from docpipe.api.schemas import BatchPage, BatchSummaryView, BatchView, ErrorBody

router = APIRouter(prefix="/api/batches", tags=["batches"])


@router.get("", responses={403: {"model": ErrorBody}})
def list_batches(
    tenant: NamedTenantDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> BatchPage:
    """The tenant's batches, newest first."""
    items, total = batches.list_batches(tenant.id, limit=limit, offset=offset)
    return BatchPage(
        items=[BatchSummaryView.of(b) for b in items], total=total, limit=limit, offset=offset
    )


@router.get("/{batch_id}", responses={404: {"model": ErrorBody}})
def get_batch(batch_id: str, tenant: TenantDep) -> BatchView:
    """A batch with every document's status."""
    return BatchView.of(batches.get_batch(tenant.id, batch_id))
