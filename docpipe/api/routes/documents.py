"""Uploads, and documents by id."""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import (
    APIRouter,
    Depends,
    File,
    Form,
    Path,
    Query,
    Request,
    Response,
    UploadFile,
    status,
)
from fastapi.responses import PlainTextResponse
from starlette.datastructures import UploadFile as StarletteUploadFile

from docpipe import batches, dispatch, pipeline
from docpipe.api.deps import NamedTenantDep, SettingsDep, TenantDep
from docpipe.api.schemas import (
    DOCUMENT_ID,
    BatchAccepted,
    DocumentAccepted,
    DocumentView,
    WordsView,
    error_answers,
)
from docpipe.errors import DocpipeError
from docpipe.inbox import safe_name
from docpipe.models import Output, Tenant

router = APIRouter(prefix="/api/documents", tags=["documents"])
UPLOAD_ERRORS = error_answers(
    400,
    401,
    403,
    413,
    429,
    503,
    _400="A file is not a PDF, PNG, JPEG or TIFF, or is empty; too many files; an unknown "
    "language; an option given twice. invalidFiles names every bad file, and nothing was "
    "stored.",
)
DocumentId = Annotated[
    str, Path(description="The document's id, as the upload answered.", examples=[DOCUMENT_ID])
]


LANGUAGE_HELP = (
    "Tesseract's languages for this upload, joined by '+' (e.g. deu+eng); default: the "
    "tenant's. GET /api/languages lists those installed."
)
LanguageQuery = Annotated[
    str | None, Query(alias="language", description=LANGUAGE_HELP, examples=["deu+eng"])
]
LanguageForm = Annotated[
    str | None, Form(alias="language", description=LANGUAGE_HELP, examples=["deu+eng"])
]
CALLBACK_HELP = (
    "POST this batch's end here instead of to the tenant's webhook, signed with the "
    "tenant's webhook secret (docs/operations.md#webhooks); http(s), public addresses only."
)
CallbackQuery = Annotated[
    str | None,
    Query(alias="callbackUrl", description=CALLBACK_HELP, examples=["https://example.com/hook"]),
]
CallbackForm = Annotated[
    str | None,
    Form(alias="callbackUrl", description=CALLBACK_HELP, examples=["https://example.com/hook"]),
]


def _accept(
    tenant: Tenant,
    files: list[UploadFile],
    settings: SettingsDep,
    language: str | None,
    language_field: str | None,
    callback: str | None = None,
    callback_field: str | None = None,
) -> batches.CreatedBatch:
    # An empty value counts: `?language=` beside a form field would otherwise be one a
    # proxy reads as "the tenant's default" while docpipe took the field's.
    if language is not None and language_field is not None and language != language_field:
        raise DocpipeError("language is given twice (query and form field), differently")
    if callback is not None and callback_field is not None and callback != callback_field:
        raise DocpipeError("callbackUrl is given twice (query and form field), differently")
    return dispatch.accept_batch(
        tenant,
        [(f.filename, f.file) for f in files],
        settings,
        language=language or language_field,
        callback_url=callback or callback_field or None,
    )


def _files_as(field: str, *, at_most: int | None = None) -> Any:
    """A dependency: the request's files are all parts named `field` (at most `at_most`),
    and its options each given once. FastAPI would keep one of several `file` parts, or
    ignore files under another name, without a word, and the client would think them
    uploaded."""

    async def check(request: Request) -> None:
        form = await request.form()  # the form FastAPI read already
        others = sorted({k for k, v in form.multi_items() if k != field and _is_file(v)})
        if others:
            named = ", ".join(f"`{safe_name(k[:50])}`" for k in others)
            raise DocpipeError(f"files sent as {named}: this endpoint takes them as `{field}`")
        for name in ("language", "callbackUrl"):
            # FastAPI would keep the last: a proxy that checked the first saw another.
            if len(form.getlist(name)) > 1 or len(request.query_params.getlist(name)) > 1:
                raise DocpipeError(f"{name} is given more than once")
        if at_most is not None and len(form.getlist(field)) > at_most:
            raise DocpipeError(
                "one document per upload here: send several as `files` parts to "
                "/api/documents/bulk-upload"
            )

    return Depends(check)


def _is_file(value: object) -> bool:
    return isinstance(value, StarletteUploadFile)


@router.post(
    "/bulk-upload",
    status_code=status.HTTP_202_ACCEPTED,
    responses=UPLOAD_ERRORS,
    dependencies=[_files_as("files")],
)
def bulk_upload(
    tenant: NamedTenantDep,
    files: Annotated[list[UploadFile], File(description="The batch's documents.")],
    settings: SettingsDep,
    language: LanguageQuery = None,
    language_field: LanguageForm = None,
    callback: CallbackQuery = None,
    callback_field: CallbackForm = None,
) -> BatchAccepted:
    """Upload a batch (PDF, PNG, JPEG, TIFF); every file is checked before any is kept."""
    created = _accept(tenant, files, settings, language, language_field, callback, callback_field)
    return BatchAccepted(
        batch_id=created.batch_id,
        document_ids=created.document_ids,
        status=created.status,
        status_url=f"/api/batches/{created.batch_id}",
    )


@router.post(
    "/upload",
    status_code=status.HTTP_202_ACCEPTED,
    responses=UPLOAD_ERRORS,
    dependencies=[_files_as("file", at_most=1)],
)
def upload(
    tenant: NamedTenantDep,
    file: Annotated[UploadFile, File(description="One document.")],
    settings: SettingsDep,
    language: LanguageQuery = None,
    language_field: LanguageForm = None,
    callback: CallbackQuery = None,
    callback_field: CallbackForm = None,
) -> DocumentAccepted:
    """Upload one document: a batch of one."""
    created = _accept(tenant, [file], settings, language, language_field, callback, callback_field)
    return DocumentAccepted(
        document_id=created.document_ids[0],
        batch_id=created.batch_id,
        status=created.status,
        status_url=f"/api/batches/{created.batch_id}",
    )


@router.get("/{document_id}", responses=error_answers(401, 404, 503))
def get_document(document_id: DocumentId, tenant: TenantDep) -> DocumentView:
    """A document's metadata and status."""
    return DocumentView.model_validate(batches.find_document(tenant.id, document_id))


OUTPUT_ERRORS = error_answers(
    401,
    404,
    409,
    503,
    _404="No such document, or this output was not made for it.",
    _409="The document is not Ready yet.",
)
# What is served is made of a tenant's upload: never sniffed, never run as a page's script.
SAFE_HEADERS = {"X-Content-Type-Options": "nosniff"}


@router.get("/{document_id}/text", response_class=PlainTextResponse, responses=OUTPUT_ERRORS)
def get_document_text(document_id: DocumentId, tenant: TenantDep) -> PlainTextResponse:
    """The document's OCR text, pages separated by a form feed; 409 until it is Ready."""
    text = pipeline.read_text(batches.find_document(tenant.id, document_id))
    return PlainTextResponse(text, headers=SAFE_HEADERS)


@router.get(
    "/{document_id}/pdf",
    response_class=Response,
    responses={**OUTPUT_ERRORS, 200: {"content": {"application/pdf": {}}}},
)
def get_document_pdf(document_id: DocumentId, tenant: TenantDep) -> Response:
    """The searchable PDF: the original pages, upright, with the text invisible over them."""
    document = batches.find_document(tenant.id, document_id)
    return Response(
        pipeline.read_output(document, Output.PDF),
        media_type="application/pdf",
        headers=SAFE_HEADERS | _disposition("inline", f"{_stem(document.file_name)}.pdf"),
    )


@router.get(
    "/{document_id}/hocr",
    response_class=Response,
    responses={**OUTPUT_ERRORS, 200: {"content": {"text/html": {}}}},
)
def get_document_hocr(document_id: DocumentId, tenant: TenantDep) -> Response:
    """The text with its layout as hOCR (HTML): pages, blocks, lines, words and their boxes."""
    document = batches.find_document(tenant.id, document_id)
    return Response(
        pipeline.read_output(document, Output.HOCR),
        media_type="text/html; charset=utf-8",
        headers=SAFE_HEADERS | {"Content-Security-Policy": "default-src 'none'; sandbox"},
    )


@router.get("/{document_id}/words", responses=OUTPUT_ERRORS)
def get_document_words(document_id: DocumentId, tenant: TenantDep) -> WordsView:
    """Every word with its page, box (pixels of the page as read) and confidence (0-100)."""
    document = batches.find_document(tenant.id, document_id)
    return WordsView.model_validate(json.loads(pipeline.read_output(document, Output.WORDS)))


@router.get(
    "/{document_id}/original",
    response_class=Response,
    responses={
        **error_answers(401, 404, 503),
        200: {"content": {"application/octet-stream": {}}},
    },
)
def get_document_original(document_id: DocumentId, tenant: TenantDep) -> Response:
    """The uploaded bytes, as they came, under their file name."""
    document = batches.find_document(tenant.id, document_id)
    return Response(
        pipeline.read_original(document),
        media_type=MEDIA_TYPES[document.kind],
        headers=SAFE_HEADERS | _disposition("attachment", document.file_name),
    )


MEDIA_TYPES = {
    "pdf": "application/pdf",
    "png": "image/png",
    "jpeg": "image/jpeg",
    "tiff": "image/tiff",
}


def _stem(file_name: str) -> str:
    return file_name.rsplit(".", 1)[0] if "." in file_name.strip(".") else file_name


_UNSHOWN = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def _disposition(kind: str, file_name: str) -> dict[str, str]:
    """A file name a browser saves under and no header can be broken by (RFC 6266)."""
    plain = re.sub(r"[^A-Za-z0-9._ ()-]", "_", file_name).strip(" .") or "document"
    # Without control, format, unassigned or private characters, nor line breaks: a
    # right-to-left override would make "\u202egnp.exe" show as "exe.png" in a browser's
    # save dialog, and a line separator would split the name where it is shown.
    shown = "".join(c for c in file_name if unicodedata.category(c) not in _UNSHOWN)
    # Trimmed as the plain one is, so both name the same file (".png" would save hidden).
    shown = shown.strip(" .") or plain
    return {"Content-Disposition": f"{kind}; filename=\"{plain}\"; filename*=UTF-8''{quote(shown)}"}
