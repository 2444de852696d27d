"""Neutron list conventions: filters, tag filters, sorting, pagination and fields."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from pydantic import ValidationError

from wyvern.api.attributes import Attr, ResourceDef
from wyvern.api.context import RequestContext
from wyvern.api.errors import BadRequest, InvalidInput, shorten

CONTROL = {"fields", "sort_key", "sort_dir", "limit", "marker", "page_reverse"}
TAG_FILTERS = {"tags", "tags-any", "not-tags", "not-tags-any"}


@dataclass(slots=True)
class ListQuery:
    filters: dict[str, list[str]]
    tag_filters: dict[str, set[str]]
    fields: list[str]
    sort: list[tuple[str, bool]]  # (key, ascending)
    limit: int | None
    marker: str | None
    page_reverse: bool


def parse_query(
    defn: ResourceDef, ctx: RequestContext, items: list[tuple[str, str]], max_limit: int = -1
) -> ListQuery:
    multi: dict[str, list[str]] = {}
    for k, v in items:
        multi.setdefault(k, []).append(v)
    filters: dict[str, list[str]] = {}
    tag_filters: dict[str, set[str]] = {}
    for key, values in multi.items():
        if key in CONTROL:
            continue
        if key in TAG_FILTERS:
            tag_filters[key] = {t for v in values for t in v.split(",") if t}
            continue
        attr = defn.attr(key)
        # (as Neutron, whose filters answer to no policy: a member may filter on an
        # attribute hidden from it, e.g. provider:network_type, among what it can see)
        known = key in defn.extra_filters or (attr is not None and attr.filter)
        if not known:
            raise BadRequest(f"[{key}] is invalid attribute for filtering", type="HTTPBadRequest")
        if attr is not None and key not in defn.extra_filters:
            for raw in values:
                _filter_value(attr, key, raw)  # a value of the wrong type is 400 up front
        filters[key] = values
    sort_keys = multi.get("sort_key", [])
    sort_dirs = multi.get("sort_dir", [])
    if sort_dirs and len(sort_dirs) != len(sort_keys):
        raise BadRequest("The number of sort_keys and sort_dirs must be same")
    sort: list[tuple[str, bool]] = []
    for i, key in enumerate(sort_keys):
        attr = defn.attr(key)
        if attr is None or not attr.sort:
            raise BadRequest(f"{key} is invalid attribute for sort_keys")
        direction = sort_dirs[i] if i < len(sort_dirs) else "asc"
        if direction not in ("asc", "desc"):
            raise BadRequest(f"{direction} is invalid value for sort_dirs, valid: asc, desc")
        sort.append((key, direction == "asc"))
    limit: int | None = None
    if "limit" in multi:
        raw = multi["limit"][-1]
        try:
            limit = int(raw)
        except ValueError:
            raise BadRequest(f"Limit must be an integer 0 or greater and not '{raw}'") from None
        if limit < 0:
            raise BadRequest(f"Limit must be an integer 0 or greater and not '{raw}'")
        if limit == 0:
            limit = None
    if max_limit > 0 and (limit is None or limit > max_limit):
        limit = max_limit
    fields = [f for f in multi.get("fields", []) if f]
    page_reverse = _boolean("page_reverse", multi.get("page_reverse", ["false"])[-1])
    return ListQuery(
        filters,
        tag_filters,
        fields,
        sort,
        limit,
        multi.get("marker", [None])[-1],
        page_reverse,
    )


def _boolean(key: str, raw: str) -> bool:
    """Neutron's convert_to_boolean: true/false/1/0 only, anything else is 400."""
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise InvalidInput(f"'{shorten(raw)}' cannot be converted to boolean for {key}")


def _matches_value(value: Any, wanted: list[Any]) -> bool:
    if isinstance(value, list):
        return any(w in value for w in wanted)
    return value in wanted


def filter_objects(
    defn: ResourceDef, query: ListQuery, objs: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    out = objs
    for key, raw_values in query.filters.items():
        extra = defn.extra_filters.get(key)
        if extra is not None:
            out = [o for o in out if extra(o, raw_values)]
            continue
        attr = defn.by_name[key]
        wanted = [_filter_value(attr, key, raw) for raw in raw_values]
        if "" in raw_values and attr.type is not str:
            wanted.append(None)
        out = [o for o in out if _matches_value(o.get(key), wanted)]
    tf = query.tag_filters
    if tf:
        out = [o for o in out if _tags_match(set(o.get("tags") or ()), tf)]
    return out


def _filter_value(attr: Attr, key: str, raw: str) -> Any:
    """Convert a query-string value to the attribute's type, as Neutron's convert_to does:
    a value no member of the type can take (`mtu=abc`) is 400. A malformed string (an
    invalid UUID, say) just matches nothing; an empty value matches unset ones."""
    try:
        return attr.adapter.validate_strings(raw)
    except ValidationError:
        pass
    try:
        return attr.adapter.validate_python(raw)
    except ValidationError:
        if raw and not takes_text(attr.adapter.json_schema()):
            raise InvalidInput(f"'{shorten(raw)}' is not a valid value for {key}") from None
        return raw


def takes_text(schema: dict[str, Any]) -> bool:
    """Whether a JSON schema admits some strings (a list filter names one member)."""
    choices = [*schema.get("enum", ()), *([schema["const"]] if "const" in schema else [])]
    if choices:
        return any(isinstance(c, str) for c in choices)
    kind = schema.get("type")
    if kind == "array":
        return takes_text(schema.get("items", {}))
    if kind in ("string", "object") or not (kind or "anyOf" in schema or "oneOf" in schema):
        return True
    return any(takes_text(s) for s in (*schema.get("anyOf", ()), *schema.get("oneOf", ())))


def _tags_match(tags: set[str], tf: dict[str, set[str]]) -> bool:
    if "tags" in tf and not tf["tags"] <= tags:
        return False
    if "tags-any" in tf and not (tf["tags-any"] & tags):
        return False
    if "not-tags" in tf and tf["not-tags"] and tf["not-tags"] <= tags:
        return False
    return not ("not-tags-any" in tf and tf["not-tags-any"] & tags)


def _sorter(key: str) -> Callable[[dict[str, Any]], _Key]:
    return lambda o: _Key(o.get(key))


class _Key:
    """Sort key that orders None first and never compares unlike types."""

    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v: tuple[int, Any] = (
            (0, "") if v is None else (1, v) if isinstance(v, int | float | bool) else (2, str(v))
        )

    def __lt__(self, other: _Key) -> bool:
        return self.v < other.v

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Key) and self.v == other.v

    def __hash__(self) -> int:
        return hash(self.v)


def sort_objects(
    query: ListQuery, objs: list[dict[str, Any]], all_objs: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Sort, then take the page after the marker (before it with page_reverse)."""
    sort = list(query.sort)
    if not any(k == "id" for k, _ in sort):
        sort.append(("id", True))
    reverse = query.page_reverse
    out = list(objs)
    for key, asc in reversed(sort):
        out.sort(key=_sorter(key), reverse=(not asc) ^ reverse)
    if query.marker is not None:
        marker = next((o for o in all_objs if o.get("id") == query.marker), None)
        if marker is None:
            raise BadRequest(f"Marker {query.marker} could not be found")
        mark = _sort_tuple(sort, marker, reverse)
        out = [o for o in out if _sort_tuple(sort, o, reverse) > mark]
    if query.limit is not None:
        out = out[: query.limit]
    if reverse:
        out.reverse()
    return out


def _sort_tuple(
    sort: list[tuple[str, bool]], obj: dict[str, Any], reverse: bool
) -> tuple[Any, ...]:
    parts: list[Any] = []
    for key, asc in sort:
        k = _Key(obj.get(key)).v
        parts.append(k if asc ^ reverse else _Neg(k))
    return tuple(parts)


class _Neg:
    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v

    def __lt__(self, other: _Neg) -> bool:
        return bool(other.v < self.v)

    def __gt__(self, other: _Neg) -> bool:
        return bool(other.v > self.v)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Neg) and self.v == other.v

    def __hash__(self) -> int:
        return hash(self.v)


def page_links(
    base: str,
    collection: str,
    items: list[tuple[str, str]],
    page: list[dict[str, Any]],
    limit: int | None,
    reverse: bool,
) -> list[dict[str, str]]:
    """Neutron's links: `next` unless a forward page came back short, `previous` unless a
    reversed one did; so a full last page still links to an empty one, as clients that
    walk Neutron's links (Tempest) expect."""
    if limit is None:
        return []
    kept = [(k, v) for k, v in items if k not in ("marker", "page_reverse", "limit")]
    kept.append(("limit", str(limit)))
    short = len(page) < limit
    links: list[dict[str, str]] = []
    if not (short and not reverse):
        q = [*kept, *([("marker", page[-1]["id"])] if page else [])]
        links.append({"rel": "next", "href": f"{base}/{collection}?{urlencode(q)}"})
    if not (short and reverse):
        q = [*kept, *([("marker", page[0]["id"])] if page else []), ("page_reverse", "True")]
        links.append({"rel": "previous", "href": f"{base}/{collection}?{urlencode(q)}"})
    return links
