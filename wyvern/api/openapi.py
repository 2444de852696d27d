"""The served OpenAPI document, built from the tables the server itself validates with.

Every route is registered with an `Op` (wyvern.api.app) that says its parameters, body and
answers; the schemas come from the resources' `Attr` types (their pydantic adapters), the
list filters and sort keys from the same flags `listing.parse_query` checks, and the
actions' bodies from the types their handlers validate with. So the document cannot drift
from what the server accepts and answers, and schemathesis can check one against the other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from wyvern.api.attributes import PROJECT_ID_PATTERN, Attr, ResourceDef, attr_schema
from wyvern.api.context import MAX_PROJECT_ID
from wyvern.api.listing import TAG_FILTERS, takes_text

JSON = "application/json"
NULL: dict[str, Any] = {"type": "null"}
STRING: dict[str, Any] = {"type": "string"}
UUID: dict[str, Any] = {"type": "string", "format": "uuid"}

# Statuses every error answer may carry, by what can cause them.
ERRORS_READ = (400, 403, 404, 503)  # malformed request, policy, unknown id, store down
ERRORS_WRITE = (400, 403, 404, 409, 413, 503)  # + conflict (in use, quota), body too big
ERROR_TEXT = {
    400: "Bad request: malformed or invalid input",
    401: "Not authenticated: a valid X-Auth-Token is required",
    403: "Not authorized by policy",
    404: "Not found (or not visible to the caller's project)",
    409: "Conflict: in use, already exists, or over quota",
    412: "If-Match revision_number does not match",
    413: "Request body larger than api_max_body_size",
    500: "SubnetAllocationError: the subnet pool has no room (Neutron answers 500)",
    503: "The store cannot serve now; retry after Retry-After seconds",
}


@dataclass
class Op:
    """One operation of the document: what the route takes and what it answers."""

    operation_id: str
    tag: str
    status: int = 200  # the success status
    response: dict[str, Any] | None = None  # success body schema; None: no body
    body: dict[str, Any] | None = None  # JSON request body schema
    query: list[dict[str, Any]] = field(default_factory=list)  # query parameter objects
    headers: list[dict[str, Any]] = field(default_factory=list)  # header parameter objects
    path_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> schema
    errors: tuple[int, ...] = ERRORS_READ
    links: dict[str, Any] = field(default_factory=dict)  # OpenAPI links of the success answer
    summary: str = ""


def error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["NeutronError"],
        "additionalProperties": False,
        "properties": {
            "NeutronError": {
                "type": "object",
                "required": ["type", "message", "detail"],
                "properties": {
                    "type": STRING,
                    "message": STRING,
                    "detail": STRING,
                },
            }
        },
    }


def object_schema(defn: ResourceDef) -> dict[str, Any]:
    """A shown object: every visible attribute (any may be left out by `fields`, or be
    admin-only), each of its attribute's type or null (unset)."""
    props = {
        a.name: {"anyOf": [attr_schema(a, output=True), NULL]} for a in defn.attrs if a.visible
    }
    return {"type": "object", "properties": props, "additionalProperties": False}


def item_schema(defn: ResourceDef) -> dict[str, Any]:
    """`{"network": {...}}`."""
    return {
        "type": "object",
        "required": [defn.name],
        "additionalProperties": False,
        "properties": {defn.name: object_schema(defn)},
    }


def collection_schema(defn: ResourceDef) -> dict[str, Any]:
    """`{"networks": [...], "networks_links": [...]}` (links only when paginated)."""
    link = {
        "type": "object",
        "required": ["rel", "href"],
        "properties": {"rel": {"enum": ["next", "previous"]}, "href": STRING},
    }
    return {
        "type": "object",
        "required": [defn.collection],
        "additionalProperties": False,
        "properties": {
            defn.collection: {"type": "array", "items": object_schema(defn)},
            f"{defn.collection}_links": {"type": "array", "items": link},
        },
    }


def create_body(defn: ResourceDef, body: dict[str, Any]) -> dict[str, Any]:
    """One object under its singular key, or a bulk list under the plural one."""
    single = {
        "type": "object",
        "required": [defn.name],
        "additionalProperties": False,
        "properties": {defn.name: body},
    }
    bulk = {
        "type": "object",
        "required": [defn.collection],
        "additionalProperties": False,
        # Each item bare, or wrapped in the singular key as Neutron also takes it.
        "properties": {
            defn.collection: {"type": "array", "items": {"anyOf": [body, single]}, "minItems": 1}
        },
    }
    return {"oneOf": [single, bulk]}


def created_schema(defn: ResourceDef) -> dict[str, Any]:
    bulk = {
        "type": "object",
        "required": [defn.collection],
        "additionalProperties": False,
        "properties": {defn.collection: {"type": "array", "items": object_schema(defn)}},
    }
    return {"oneOf": [item_schema(defn), bulk]}


def _query(name: str, schema: dict[str, Any], doc: str = "") -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": schema}
    if schema.get("type") == "array":
        param.update(style="form", explode=True)
    if doc:
        param["description"] = doc
    return param


def filter_schema(attr: Attr) -> dict[str, Any]:
    """What a filter on `attr` takes, as listing._filter_value converts it: a value of the
    attribute's scalar type; for an attribute that takes text, any string (a malformed one
    matches nothing)."""
    schema = attr_schema(attr)
    if takes_text(schema):
        return STRING
    members = [s for s in schema.get("anyOf", [schema]) if s != NULL]
    return members[0] if len(members) == 1 else STRING


def list_query(defn: ResourceDef) -> list[dict[str, Any]]:
    """The filters, tag filters, fields, sorting and paging `parse_query` accepts."""
    params = [
        _query(a.name, {"type": "array", "items": filter_schema(a)}, "filter (repeat: any of)")
        for a in defn.attrs
        if a.filter and a.name not in defn.extra_filters
    ]
    params += [
        _query(name, {"type": "array", "items": STRING}, "filter (repeat: any of)")
        for name in defn.extra_filters
    ]
    if "tags" in defn.by_name:
        params += [_query(t, STRING, "comma-separated tags") for t in sorted(TAG_FILTERS)]
    sortable = [a.name for a in defn.attrs if a.sort]
    params += [
        _query("fields", {"type": "array", "items": STRING}, "attributes to show"),
        _query("sort_key", {"type": "array", "items": {"enum": sortable}}),
        _query("sort_dir", {"type": "array", "items": {"enum": ["asc", "desc"]}}, "one per key"),
        _query("limit", {"type": "integer", "minimum": 0}, "page size (0: no limit)"),
        _query("marker", STRING, "id of the last object of the previous page"),
        _query("page_reverse", {"type": "boolean"}),
    ]
    return params


def fields_query() -> list[dict[str, Any]]:
    return [_query("fields", {"type": "array", "items": STRING}, "attributes to show")]


IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": "^revision_number=[0-9]{1,18}$"},
    "description": "apply only at this revision (else 412)",
}


# auth_strategy=noauth with noauth_trust_headers: who the caller is, else admin of the
# default project.
NOAUTH_HEADERS = [
    {
        "name": "X-Project-Id",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "maxLength": MAX_PROJECT_ID, "pattern": PROJECT_ID_PATTERN},
        "description": "noauth: act as this project",
    },
    {
        "name": "X-Roles",
        "in": "header",
        "required": False,
        # (a comma-separated list; unknown roles are ignored, as these are all there are)
        "schema": {"enum": ["admin", "member", "reader"]},
        "description": "noauth: the caller's roles (comma-separated; default admin)",
    },
]


def document(
    info: dict[str, Any],
    ops: Iterable[tuple[str, str, Op]],
    token_auth: bool,
    noauth_headers: bool = True,
) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document of the registered operations."""
    paths: dict[str, dict[str, Any]] = {}
    for path, method, op in ops:
        paths.setdefault(path, {})[method.lower()] = _operation(
            path, op, token_auth, noauth_headers
        )
    components: dict[str, Any] = {
        "schemas": {"NeutronError": error_schema()},
        "responses": {str(code): _error_response(code) for code in (*ERROR_TEXT, 401)},
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": info,
        "paths": paths,
        "components": components,
    }
    if token_auth:  # either header carries the token (context.Authenticator)
        components["securitySchemes"] = {
            "token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"},
            "bearer": {"type": "http", "scheme": "bearer"},
        }
        doc["security"] = [{"token": []}, {"bearer": []}]
    return doc


def _error_response(code: int) -> dict[str, Any]:
    resp: dict[str, Any] = {
        "description": ERROR_TEXT[code],
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/NeutronError"}}},
    }
    if code == 503:
        resp["headers"] = {"Retry-After": {"required": True, "schema": STRING}}
    if code == 401:
        resp["headers"] = {"WWW-Authenticate": {"required": True, "schema": STRING}}
    return resp


def _operation(path: str, op: Op, token_auth: bool, noauth_headers: bool) -> dict[str, Any]:
    params = [
        {"name": name, "in": "path", "required": True, "schema": op.path_params.get(name, UUID)}
        for name in re.findall(r"{(\w+)}", path)
    ]
    ok: dict[str, Any] = {"description": "Success"}
    if op.response is not None:
        ok["content"] = {JSON: {"schema": op.response}}
    if op.links:
        ok["links"] = op.links
    responses: dict[str, Any] = {str(op.status): ok}
    codes = set(op.errors) | ({401} if token_auth else set())
    for code in sorted(codes):
        responses[str(code)] = {"$ref": f"#/components/responses/{code}"}
    if not token_auth and noauth_headers and path.startswith("/v2.0/"):
        params += NOAUTH_HEADERS
    out: dict[str, Any] = {
        "operationId": op.operation_id,
        "tags": [op.tag],
        "parameters": [*params, *op.query, *op.headers],
        "responses": responses,
    }
    if op.summary:
        out["summary"] = op.summary
    if op.body is not None:
        out["requestBody"] = {"required": True, "content": {JSON: {"schema": op.body}}}
    return out
