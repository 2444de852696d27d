"""The API contract as data (neutron-lib style): one `ResourceDef` per resource.

Each attribute says whether it may be set on POST or PUT, whether it is required,
its default, its type (validated through a pydantic TypeAdapter), whether it can be
filtered and sorted on, and who may set or see it. Validation, filtering, sorting,
policy and the OpenAPI docs all read from these definitions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import StringConstraints, TypeAdapter, ValidationError

from wyvern.api.context import RequestContext
from wyvern.api.errors import ECHO_CHARS, BadRequest, InvalidInput, shorten


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

Name = Annotated[str, StringConstraints(max_length=255)]
Description = Annotated[str, StringConstraints(max_length=255)]
# No "/": a project id is a segment of store keys (model/keys.py: owner_prefix), and "a/x"
# would count as project a's (Keystone's ids are hex; Neutron's noauth takes any string).
PROJECT_ID_PATTERN = r"^[^/]*$"
ProjectId = Annotated[str, StringConstraints(max_length=255, pattern=PROJECT_ID_PATTERN)]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=255)]
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime(TIME_FORMAT)


@dataclass(frozen=True, eq=False)
class Attr:
    name: str
    type: Any = str
    post: bool = False
    put: bool = False
    required: bool = False
    default: Any = MISSING
    default_factory: Callable[[], Any] | None = None
    filter: bool = False
    sort: bool = False
    visible: bool = True
    # Neutron declares this attribute's default, and its policy then ignores the attribute
    # when a create sends exactly that default: a member may send it (shared=false).
    default_passes_policy: bool = False
    doc: str = ""
    adapter: TypeAdapter[Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "adapter", TypeAdapter(self.type))

    def has_default(self) -> bool:
        return self.default is not MISSING or self.default_factory is not None

    def make_default(self) -> Any:
        if self.default_factory is not None:
            return self.default_factory()
        return self.default

    def convert(self, value: Any) -> Any:
        try:
            return self.adapter.validate_python(value)
        except ValidationError as exc:
            reason = "; ".join(_error_text(e) for e in exc.errors())
            raise InvalidInput(f"Invalid input for {self.name}. Reason: {reason}.") from None


def _error_text(err: Any) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ()) if not str(p).startswith("function-"))
    msg = shorten(err.get("msg", "invalid value"), 3 * ECHO_CHARS)
    value = err.get("input")
    text = f"'{shorten(value)}' is not valid: {msg}" if not isinstance(value, dict | list) else msg
    return f"{shorten(loc)}: {text}" if loc else text


def standard_attrs(name_post: bool = True) -> list[Attr]:
    """Attributes every Neutron resource carries."""
    return [
        Attr("id", str, post=False, filter=True, sort=True),
        Attr("name", Name, post=name_post, put=name_post, default="", filter=True, sort=True),
        Attr("description", Description, post=True, put=True, default="", filter=True, sort=True),
        Attr("project_id", ProjectId, post=True, filter=True, sort=True),
        Attr("tenant_id", ProjectId, post=True, filter=True, sort=True),
        Attr("created_at", str, filter=True, sort=True),
        Attr("updated_at", str, filter=True, sort=True),
        Attr("revision_number", int, filter=True, sort=True),
        Attr("tags", list[Tag], post=True, default_factory=list),
    ]


@dataclass(frozen=True, eq=False)
class ResourceDef:
    name: str  # singular body key, e.g. "security_group"
    collection: str  # plural body key, e.g. "security_groups"
    path: str  # URL segment, e.g. "security-groups"
    attrs: tuple[Attr, ...]
    kind: str  # store key segment
    parent_attr: str | None = None  # objects are keyed under this attribute's value
    quota: str | None = None
    owned: bool = True  # has project_id
    # A sub-resource (path /<parent collection>/{<parent_param>}/<collection>): the
    # routes pass the parent's id in RequestContext.parent.
    parent_param: str | None = None
    # Extra list filters beyond attributes: name -> (object, values) -> match.
    extra_filters: dict[str, Callable[[dict[str, Any], list[str]], bool]] = field(
        default_factory=dict
    )
    by_name: dict[str, Attr] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {a.name: a for a in self.attrs})

    def attr(self, name: str) -> Attr | None:
        return self.by_name.get(name)


def _convert_body(defn: ResourceDef, ctx: RequestContext, body: Any, action: str) -> dict[str, Any]:
    """Check and convert the attributes a POST or PUT body names (no defaults)."""
    if not isinstance(body, dict):
        raise BadRequest("Body contains invalid data: expected an object.")
    unknown = sorted(k for k in body if k not in defn.by_name)
    if unknown:
        raise BadRequest(f"Unrecognized attribute(s) '{', '.join(unknown)}'")
    out: dict[str, Any] = {}
    for name, value in body.items():
        attr = defn.by_name[name]
        if action == "create" and not attr.post:
            raise BadRequest(f"Attribute '{name}' not allowed in POST")
        if action == "update" and not attr.put:
            raise BadRequest(f"Cannot update read-only attribute {name}")
        out[name] = attr.convert(value)
    return out


def validate_create(defn: ResourceDef, ctx: RequestContext, body: Any) -> dict[str, Any]:
    """Body of one POSTed object → complete attribute dict (defaults filled)."""
    out = _convert_body(defn, ctx, body, "create")
    if defn.owned:
        _resolve_project(defn, ctx, out)
    for attr in defn.attrs:
        if not attr.post or attr.name in out:
            continue
        if attr.required:
            raise BadRequest(
                f"Failed to parse request. Required attribute '{attr.name}' not specified"
            )
        if attr.has_default():
            out[attr.name] = attr.make_default()
    return out


def _resolve_project(defn: ResourceDef, ctx: RequestContext, out: dict[str, Any]) -> None:
    project = out.get("project_id")
    tenant = out.get("tenant_id")
    if project is not None and tenant is not None and project != tenant:
        raise BadRequest("'project_id' and 'tenant_id' do not match")
    owner = project or tenant or ctx.project_id
    if owner != ctx.project_id and not ctx.is_admin:  # (neutron-lib's populate_project_id)
        raise BadRequest(
            "Specifying 'project_id' or 'tenant_id' other than the authenticated project in "
            "request requires admin privileges"
        )
    out["project_id"] = out["tenant_id"] = owner


def validate_update(defn: ResourceDef, ctx: RequestContext, body: Any) -> dict[str, Any]:
    return _convert_body(defn, ctx, body, "update")


def present(
    defn: ResourceDef, ctx: RequestContext, obj: dict[str, Any], fields: list[str] | None = None
) -> dict[str, Any]:
    """Stored object → what this caller may see (optionally only `fields`)."""
    out: dict[str, Any] = {}
    for attr in defn.attrs:
        if not attr.visible:  # (attributes the caller may not read: Policy.strip)
            continue
        if fields and attr.name not in fields:
            continue
        out[attr.name] = obj.get(attr.name)
    return out


def attr_schema(attr: Attr, output: bool = False) -> dict[str, Any]:
    """JSON schema of an attribute's values (as accepted; `output`: as shown)."""
    schema = inline_refs(attr.adapter.json_schema(mode="serialization" if output else "validation"))
    if attr.doc:
        schema["description"] = attr.doc
    return schema


def openapi_schema(defn: ResourceDef, action: str) -> dict[str, Any]:
    """JSON schema of one object in a POST/PUT body (inside its envelope), for the docs."""
    props: dict[str, Any] = {}
    required: list[str] = []
    for attr in defn.attrs:
        if (action == "post" and not attr.post) or (action == "put" and not attr.put):
            continue
        props[attr.name] = attr_schema(attr)
        if action == "post" and attr.required:
            required.append(attr.name)
    inner: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        inner["required"] = required
    return inner


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """Replace local `$defs` references by their definitions: an attribute's schema is
    embedded deep in the OpenAPI document, where `#/$defs/...` would not resolve."""
    defs: dict[str, Any] = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(dict(defs[ref.rsplit("/", 1)[1]]))
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    out: dict[str, Any] = walk(schema)
    return out
