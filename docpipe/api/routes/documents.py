"""Uploads, and documents by id."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, UploadFile, status
from fastapi.responses import PlainTextResponse

from docpipe import batches, dispatch, pipeline
from docpipe.api.deps import NamedTenantDep, SettingsDep, TenantDep
from docpipe.api.schemas import BatchAccepted, DocumentAccepted, DocumentView, ErrorBody
from docpipe.errors import Conflict
from docpipe.models import DocumentStatus, Tenant

router = APIRouter(prefix="/api/documents", tags=["documents"])
ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 413)
}


def _accept(tenant: Tenant, files: list[UploadFile], settings: SettingsDep) -> batches.CreatedBatch:
    return dispatch.accept_batch(tenant, [(f.filename, f.file) for f in files], settings)


@router.post("/bulk-upload", status_code=status.HTTP_202_ACCEPTED, responses=ERRORS)
def bulk_upload(
    tenant: NamedTenantDep,
    files: Annotated[list[UploadFile], File(description="The batch's documents.")],
    settings: SettingsDep,
) -> BatchAccepted:
    """Upload a batch (PDF, PNG, JPEG, TIFF); every file is checked before any is kept."""
    created = _accept(tenant, files, settings)
    return BatchAccepted(
        batch_id=created.batch_id,
        document_ids=created.document_ids,
        status=created.status,
        status_url=f"/api/batches/{created.batch_id}",
    )


@router.post("/upload", status_code=status.HTTP_202_ACCEPTED, responses=ERRORS)
def upload(
    tenant: NamedTenantDep,
    file: Annotated[UploadFile, File(description="One document.")],
    settings: SettingsDep,
) -> DocumentAccepted:
    """Upload one document: a batch of one."""
    created = _accept(tenant, [file], settings)
    return DocumentAccepted(
        document_id=created.document_ids[0],
        batch_id=created.batch_id,
        status=created.status,
        status_url=f"/api/batches/{created.batch_id}",
    )


@router.get("/{document_id}", responses={404: {"model": ErrorBody}})
def get_document(document_id: str, tenant: TenantDep) -> DocumentView:
    """A document's metadata and status."""
    return DocumentView.model_validate(batches.find_document(tenant.id, document_id))


@router.get(
    "/{document_id}/text",
    response_class=PlainTextResponse,
    responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
)
def get_document_text(document_id: str, tenant: TenantDep) -> str:
    """The document's OCR text; 409 until it is Ready."""
    document = batches.find_document(tenant.id, document_id)
    if document.status != DocumentStatus.READY:
        raise Conflict(f"document is {document.status.value}, not Ready")
    return pipeline.read_text(document)
