"""The API's documentation: served from this server alone (it works with no internet), and
an OpenAPI that says what each route takes and answers, errors included."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
from fastapi.testclient import TestClient

from tests.helpers import files_part, good_files

BASE = "http://testserver"


class Links(HTMLParser):
    """Every URL a page loads or links: src, href, and the scripts' spec-url / url."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href", "spec-url") and v]


def loaded_urls(html: str) -> list[str]:
    links = Links()
    links.feed(html)
    # Swagger UI is configured in an inline script: `url: '/openapi.json'`.
    scripted = re.findall(r"""\burl['"]?\s*:\s*['"]([^'"]+)['"]""", html)
    return links.urls + scripted


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_load_nothing_from_another_host(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert not re.search(r"(?:https?:)?//[\w.-]+", response.text), "an outside URL in " + page
    urls = loaded_urls(response.text)
    assert any(u.endswith(".js") for u in urls) and "/openapi.json" in urls
    for url in urls:
        absolute = urljoin(BASE + page, url)
        assert urlsplit(absolute).netloc == "testserver", url
        loaded = client.get(absolute)
        assert loaded.status_code == 200, url
        assert loaded.content, url


def test_the_scripts_they_load_are_the_real_bundles(client: TestClient) -> None:
    swagger = client.get("/docs-assets/swagger-ui-bundle.js")
    redoc = client.get("/docs-assets/redoc.standalone.js")
    assert "javascript" in swagger.headers["content-type"]
    assert "SwaggerUIBundle" in swagger.text and "Redoc" in redoc.text


@pytest.fixture
def schema(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def operations(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{method.upper()} {path}", operation)
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    ]


def test_errors_are_documented_as_the_api_answers_them(schema: dict[str, Any]) -> None:
    """400 (never FastAPI's 422) and every other 4xx with the {"error"} body."""
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for name, operation in operations(schema):
        answers = operation["responses"]
        assert "422" not in answers, name
        if operation.get("parameters") or operation.get("requestBody"):
            assert "400" in answers, name
        for code, answer in answers.items():
            if code.startswith("4"):
                body = answer["content"]["application/json"]["schema"]
                assert body == {"$ref": "#/components/schemas/ErrorBody"}, (name, code)
                assert answer["description"], (name, code)
    cancel = schema["paths"]["/api/batches/{batch_id}/cancel"]["post"]["responses"]
    assert "409" in cancel


def test_the_api_key_is_a_security_scheme_every_route_but_health_needs(
    schema: dict[str, Any],
) -> None:
    assert schema["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": schema["components"]["securitySchemes"]["ApiKey"]["description"],
    }
    for name, operation in operations(schema):
        if name != "GET /health":
            assert operation["security"] == [{"ApiKey": []}], name
            assert "401" in operation["responses"], name
        # The key is the scheme's, not a parameter Swagger UI would ask for twice.
        assert "X-API-Key" not in [p["name"] for p in operation.get("parameters", [])]


def test_every_route_parameter_and_field_is_described_with_an_example(
    schema: dict[str, Any],
) -> None:
    for name, operation in operations(schema):
        assert operation.get("summary") and operation.get("description"), name
        for parameter in operation.get("parameters", []):
            assert parameter.get("description"), (name, parameter["name"])
            assert parameter["schema"].get("examples"), (name, parameter["name"])
            if parameter["name"] == "tenantId":
                assert not parameter["required"], name
    for model, body in schema["components"]["schemas"].items():
        for field, spec in body.get("properties", {}).items():
            assert spec.get("description"), (model, field)
            nested = "$ref" in str(spec)  # a list or object of a model: its fields have them
            assert nested or spec.get("examples") or model.startswith("Body_"), (model, field)


def test_tenant_id_may_be_left_out_the_key_names_the_tenant(
    client: TestClient, tenant: tuple[str, str]
) -> None:
    tenant_id, key = tenant
    headers = {"X-API-Key": key}
    response = client.post(
        "/api/documents/bulk-upload", headers=headers, files=files_part(good_files(1))
    )
    assert response.status_code == 202
    batch = client.get(response.json()["statusUrl"], headers=headers).json()
    assert batch["tenantId"] == tenant_id
    listed = client.get("/api/batches", headers=headers).json()
    assert [b["id"] for b in listed["items"]] == [batch["id"]]
