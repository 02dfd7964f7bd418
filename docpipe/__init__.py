"""docpipe: batch OCR of scanned documents, orchestrated by Prefect."""
