"""docpipe's error hierarchy; the API maps these to HTTP codes in one place."""

import re

# What of a library's message a tenant may see.
MAX_REASON_CHARS = 300


def fit_for_tenant(message: str) -> str:
    """A library's message as a tenant may see it: no object reprs, no memory addresses,
    at most MAX_REASON_CHARS; empty if nothing is left."""
    text = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the file", message)
    text = re.sub(r"0x[0-9a-fA-F]{6,}", "", text).strip()
    return text[:MAX_REASON_CHARS].strip()


class DocpipeError(Exception):
    """Base of every error docpipe raises on purpose."""


class InvalidDocument(DocpipeError):
    """A document's bytes are not a usable PDF, PNG, JPEG or TIFF."""


class OcrFailed(DocpipeError):
    """Tesseract could not read a document that passed validation."""


class OcrInterrupted(OcrFailed):
    """Tesseract died (a crash or a signal): the same page may well read the next time."""


class UnknownLanguage(DocpipeError):
    """An OCR language Tesseract has no data for here, or not a language name at all."""


class WebhookRefused(DocpipeError):
    """A webhook URL docpipe will not send to: not http(s), or not a public address."""


class SchemaError(DocpipeError):
    """The database's schema is not this release's, and docpipe cannot make it so."""


class NotFound(DocpipeError):
    """The thing asked for does not exist, or belongs to another tenant."""


class Conflict(DocpipeError):
    """The request does not fit the thing's current state."""


class Unauthorized(DocpipeError):
    """No API key, or one that matches no tenant."""


class Forbidden(DocpipeError):
    """The API key is valid but not for the tenant named in the request."""


class InvalidUpload(DocpipeError):
    """An upload that fails the cheap checks; names every bad file."""

    def __init__(self, message: str, invalid_files: list[tuple[str, str]], *, too_large: bool):
        super().__init__(message)
        self.invalid_files = invalid_files
        self.too_large = too_large


class TooBusy(DocpipeError):
    """The service has no room for this request now; the same request may succeed later."""


class StorageUnavailable(DocpipeError):
    """The document store did not answer, or refused docpipe's credentials; try again later."""


class OverLimit(DocpipeError):
    """A tenant is over one of its limits; the same request may succeed after retry_after s."""

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after
