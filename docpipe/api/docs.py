"""Swagger UI and ReDoc from assets this server holds, and an OpenAPI that says what it answers."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

# fastapi-offline ships Swagger UI's and ReDoc's bundles: /docs needs no CDN, so it works
# on a machine without internet.
ASSETS = Path(str(files("fastapi_offline") / "static"))
ASSETS_URL = "/docs-assets"
SWAGGER_PARAMETERS = {
    "persistAuthorization": True,  # the key typed into Authorize survives a reload
    "validatorUrl": None,  # else Swagger UI sends the schema to validator.swagger.io
    "tryItOutEnabled": True,
}


def serve_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc, every file they load served by this app."""
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} API",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            swagger_ui_parameters=SWAGGER_PARAMETERS,
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} API",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )


ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
BAD_REQUEST = {
    "description": "The request is malformed: a parameter out of range or of the wrong type, "
    "a missing part, an unknown language.",
    "content": {
        "application/json": {
            "schema": ERROR_REF,
            "example": {"error": "query.limit: Input should be less than or equal to 100"},
        }
    },
}


def describe_openapi(app: FastAPI) -> None:
    """The schema as the API answers: a 400 with `{"error"}` where FastAPI would say 422."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            for path in schema["paths"].values():
                for operation in path.values():
                    answers = operation.get("responses", {})
                    if answers.pop("422", None) is not None:
                        answers.setdefault("400", BAD_REQUEST)
                    for code, answer in answers.items():
                        if code >= "400":  # JSON, whatever the route's own media type is
                            answer["content"] = {"application/json": {"schema": ERROR_REF}}
            components = schema.get("components", {}).get("schemas", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                components.pop(unused, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
