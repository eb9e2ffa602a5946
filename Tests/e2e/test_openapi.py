"""The OpenAPI document of the gateway's own API (`Public/openapi.json`, served at `/openapi.json`):
it is a valid OpenAPI 3.1 document, and it documents exactly the routes the Swift controllers register.

The routes are read from the Swift sources, so that adding an endpoint without documenting it (or
removing one and leaving it documented) fails here. The forwarded upstream APIs (ProxyController, which
registers its table of endpoints with `router.on`) are not part of the document.
"""

import json
import re
from pathlib import Path

import pytest
from openapi_spec_validator import validate

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "Public" / "openapi.json"
SOURCES = ROOT / "Sources" / "GSEAIGateway"
# Registers the forwarded upstream endpoints (README "API surfaces"), deliberately undocumented here.
PROXY = SOURCES / "Proxy" / "ProxyController.swift"

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}

# `static let login: RouterPath = "/auth/login"` (public or not) inside a `Paths` enum.
PATH_CONSTANT = re.compile(r'static\s+let\s+(\w+)\s*:\s*RouterPath\s*=\s*"([^"]*)"')
# `router.get(Paths.models, use: models)`, `router.get("/healthz") { … }`, `router.post(Self.Paths.x, …)`.
ROUTE = re.compile(r'\brouter\.(get|put|post|patch|delete|head|options)\(\s*(?:"([^"]*)"|(?:Self\.)?Paths\.(\w+))')
# Any other use of a router that could add routes (`router.on`, `router.group`, `router.addRoutes`, …).
OTHER_REGISTRATION = re.compile(r'\brouter\.(?!add\(middleware:)(\w+)\(')


def load_document():
    return json.loads(DOCUMENT.read_text())


def openapi_path(pattern):
    """Hummingbird's `/api/conversations/:id` as OpenAPI's `/api/conversations/{id}`."""
    segments = []
    for segment in pattern.strip("/").split("/"):
        if segment.startswith(":"):
            segments.append("{" + segment[1:] + "}")
        elif "*" in segment or "{" in segment or ":" in segment:
            raise AssertionError(f"route pattern {pattern!r}: wildcards and partial captures are not handled by this test")
        else:
            segments.append(segment)
    return "/" + "/".join(segments)


def registered_routes():
    """(METHOD, /openapi/{path}) for every route the gateway's controllers register, and where each is."""
    routes = {}
    for source in sorted(SOURCES.rglob("*.swift")):
        if source == PROXY:
            continue
        text = source.read_text()
        constants = dict(PATH_CONSTANT.findall(text))
        for line_number, line in enumerate(text.splitlines(), start=1):
            code = line.split("//", 1)[0]
            where = f"{source.relative_to(ROOT)}:{line_number}"
            matched = False
            for method, literal, constant in ROUTE.findall(code):
                matched = True
                if constant:
                    assert constant in constants, f"{where}: Paths.{constant} is not defined in the same file"
                    pattern = constants[constant]
                else:
                    pattern = literal
                routes[(method.upper(), openapi_path(pattern))] = where
            if not matched:
                other = OTHER_REGISTRATION.search(code)
                assert other is None, (
                    f"{where}: `router.{other.group(1)}(` registers routes in a way this test cannot read; "
                    f"use router.get/post/patch/delete with a Paths constant, or extend the test"
                )
    return routes


def documented_routes(document):
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_document_is_valid_openapi_3_1():
    document = load_document()
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_route_parser_reads_the_controllers():
    # Guards the parser itself: if the sources changed shape and nothing were found, the comparison below
    # would prove nothing.
    routes = registered_routes()
    for known in [("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("POST", "/auth/login"),
                  ("DELETE", "/auth/keys/{id}"), ("GET", "/api/conversations/{id}/messages/{message}/events"),
                  ("POST", "/api/images")]:
        assert known in routes, f"{known} not found in the Swift sources; the parser needs updating"
    assert not any(path.startswith(("/v1", "/api/v1", "/api/v0")) for _, path in routes)


def test_every_route_is_documented_and_nothing_else():
    routes = registered_routes()
    documented = documented_routes(load_document())
    undocumented = sorted(f"{method} {path}  ({routes[(method, path)]})" for method, path in set(routes) - documented)
    phantom = sorted(f"{method} {path}" for method, path in documented - set(routes))
    assert not undocumented, "routes missing from Public/openapi.json:\n" + "\n".join(undocumented)
    assert not phantom, "documented in Public/openapi.json but not registered by any controller:\n" + "\n".join(phantom)


def test_path_parameters_match_the_route_captures():
    document = load_document()
    for path, item in document["paths"].items():
        captures = set(re.findall(r"\{(\w+)\}", path))
        shared = item.get("parameters", [])
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            parameters = [resolve(document, p) for p in shared + operation.get("parameters", [])]
            declared = {p["name"] for p in parameters if p["in"] == "path"}
            assert declared == captures, f"{method.upper()} {path}: path parameters {sorted(declared)} ≠ {sorted(captures)}"


def test_every_operation_says_how_it_authenticates():
    document = load_document()
    schemes = set(document["components"]["securitySchemes"])
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            requirements = operation.get("security", document.get("security"))
            assert requirements is not None, f"{method.upper()} {path}: no security requirement"
            for requirement in requirements:
                assert set(requirement) <= schemes, f"{method.upper()} {path}: unknown scheme in {requirement}"


def resolve(document, value):
    while "$ref" in value:
        node = document
        for part in value["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        value = node
    return value


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-v"]))
