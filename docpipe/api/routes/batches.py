"""Batches by id, and a tenant's batches."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Path, Query, status
from fastapi.concurrency import run_in_threadpool

from docpipe import batches, dispatch
from docpipe.api.deps import NamedTenantDep, TenantDep
from docpipe.api.schemas import BATCH_ID, BatchPage, BatchView, error_answers

router = APIRouter(prefix="/api/batches", tags=["batches"])
# Past any real tenant's count of batches, and inside every database's integer range.
MAX_OFFSET = 10**9
BatchId = Annotated[
    str, Path(description="The batch's id, as the upload answered.", examples=[BATCH_ID])
]


@router.get("", responses=error_answers(400, 401, 403, 503))
def list_batches(
    tenant: NamedTenantDep,
    limit: Annotated[
        int, Query(ge=1, le=100, description="At most this many batches.", examples=[20])
    ] = 20,
    offset: Annotated[
        int,
        Query(ge=0, le=MAX_OFFSET, description="Skip this many, newest first.", examples=[0]),
    ] = 0,
) -> BatchPage:
    """The tenant's batches, newest first."""
    items, total = batches.find_batches(tenant.id, limit=limit, offset=offset)
    return BatchPage.model_validate(
        {"items": items, "total": total, "limit": limit, "offset": offset}
    )


# How often a waiting request looks at the batch's status: one small query each time.
WAIT_CHECK_SECONDS = 0.2


@router.get("/{batch_id}", responses=error_answers(400, 401, 404, 503))
async def get_batch(
    batch_id: BatchId,
    tenant: TenantDep,
    wait_seconds: Annotated[
        float,
        Query(
            alias="waitSeconds",
            ge=0,
            le=60,
            allow_inf_nan=False,  # nan is not "over 60", as it would otherwise be told
            description="Answer as soon as the batch has finished (Completed, Failed or "
            "Cancelled), or after this many seconds with its status then: a client waiting "
            "for a batch sends one request, not one a second.",
            examples=[30],
        ),
    ] = 0,
) -> BatchView:
    """A batch with every document's status."""
    deadline = time.monotonic() + wait_seconds
    while (
        time.monotonic() < deadline
        and not (await run_in_threadpool(batches.batch_status, tenant.id, batch_id)).is_final
    ):
        await asyncio.sleep(min(WAIT_CHECK_SECONDS, max(0.0, deadline - time.monotonic())))
    batch = await run_in_threadpool(batches.find_batch, tenant.id, batch_id)
    return BatchView.model_validate(batch)


@router.post(
    "/{batch_id}/cancel",
    responses=error_answers(401, 404, 409, 503, _409="The batch has already finished."),
)
def cancel_batch(batch_id: BatchId, tenant: TenantDep) -> BatchView:
    """Stop the batch's flow run; documents not yet finished become Cancelled. 409 if finished."""
    dispatch.cancel(tenant.id, batch_id)
    return BatchView.model_validate(batches.find_batch(tenant.id, batch_id))


@router.post(
    "/{batch_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_answers(
        400,
        401,
        404,
        409,
        429,
        503,
        _409="The batch is still running, or has nothing to redo.",
        _429="The tenant's open batches or pages in flight are at their limit (Retry-After).",
    ),
)
def retry_batch(
    batch_id: BatchId,
    tenant: TenantDep,
    include_invalid: Annotated[
        bool,
        Query(
            alias="includeInvalid",
            description="Also check again the documents that failed validation (their "
            "bytes have not changed, so only a changed limit can help them).",
            examples=[False],
        ),
    ] = False,
) -> BatchView:
    """Reprocess the documents whose OCR failed or that were cancelled. 409 while the batch
    runs, or when there is nothing to redo; 429 over the tenant's limits on open work."""
    dispatch.retry(tenant.id, batch_id, include_invalid=include_invalid)
    return BatchView.model_validate(batches.find_batch(tenant.id, batch_id))
