"""The FastAPI application: Neutron routes generated from the resource definitions."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

import wyvern
from wyvern.api import logfilter, metering_metrics, openapi
from wyvern.api.attributes import attr_schema, openapi_schema, present
from wyvern.api.context import Authenticator, RequestContext, load_tokens
from wyvern.api.errors import BadRequest, NeutronError, NotFound, ServiceUnavailable, shorten
from wyvern.api.extensions import EXTENSIONS
from wyvern.api.keystone import SCOPE_KEY, KeystoneAuth
from wyvern.api.limits import BoundedBody, check_depth
from wyvern.api.listing import page_links, parse_query, sort_objects
from wyvern.api.nova import NovaNotifier
from wyvern.api.openapi import ERRORS_WRITE, IF_MATCH, Op
from wyvern.api.policy import Policy
from wyvern.api.repo import Repo
from wyvern.api.resource import ApiState, Resource, Route
from wyvern.api.resources import RESOURCE_CLASSES
from wyvern.config import Settings
from wyvern.nb.factory import open_store
from wyvern.nb.store import Store, StoreError, TxnTooLarge

LOG = logging.getLogger(__name__)
# Statuses after which the connection is not reused: a server error (the client's next
# request must not meet a reset), or a body we stopped reading (413, 408).
CLOSE_AFTER = frozenset({408, 413})


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    if status == 204:
        return Response(status_code=204, headers=headers)
    if status >= 500 or status in CLOSE_AFTER:
        headers = {**(headers or {}), "Connection": "close"}
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def _allowed_methods(request: Request) -> str:
    """The methods some route takes at this path: what a 405's Allow header lists."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE and isinstance(route, APIRoute):
            methods |= route.methods or set()
    return ", ".join(sorted(methods))


class _StripJsonSuffix:
    """Neutron accepts `/v2.0/networks.json`: strip the suffix before routing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.endswith(".json") and path.startswith("/v2.0/"):
                scope = dict(scope)
                scope["path"] = path[: -len(".json")]
                scope["raw_path"] = scope["path"].encode()
        await self.app(scope, receive, send)


def _if_match(request: Request) -> int | None:
    raw = request.headers.get("if-match")
    if not raw:
        return None
    for part in raw.split(","):
        part = part.strip().strip('"')
        if part.startswith("revision_number="):
            try:
                return int(part.split("=", 1)[1])
            except ValueError:
                break
    raise BadRequest(f"Invalid If-Match header '{raw}': expected revision_number=N")


async def _json_body(request: Request) -> Any:
    raw = await request.body()  # bounded in size and time by limits.BoundedBody
    if not raw.strip():
        raise BadRequest("Body is empty or not valid JSON")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("Malformed request body: not valid JSON") from None
    check_depth(body)
    return body


def _envelope(body: Any, key: str) -> Any:
    if not isinstance(body, dict) or key not in body or len(body) != 1:
        raise BadRequest(f"Resource body required: expected a single '{key}' object")
    return body[key]


def _operation_id(method: str, path: str) -> str:
    """`PUT /v2.0/routers/{id}/add_router_interface` -> `put_routers_id_add_router_interface`."""
    words = re.sub(r"[{}]", "", path.removeprefix("/v2.0/")).replace("-", "_").split("/")
    return "_".join([method.lower(), *words])


class Api:
    """Builds the routes; holds the store, the resource controllers and the authenticator."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.state = ApiState(settings, Repo(store), {}, Policy(settings.policy_file))
        for cls in RESOURCE_CLASSES:
            res = cls(self.state)
            self.state.resources[res.defn.name] = res
        tokens = load_tokens(settings.tokens_file) if settings.tokens_file else None
        self.auth = Authenticator(
            settings.auth_strategy,
            settings.default_project_id,
            tokens,
            trust_headers=settings.noauth_trust_headers,
        )
        self.ops: list[tuple[str, str, Op]] = []  # what the OpenAPI document describes
        try:  # deletes a crashed process left half-done (reads settle them lazily too,
            self.state.repo.settle_marks()  # so a store that cannot answer now must not
        except Exception:  # stop the API from starting: it answers 503 meanwhile)
            LOG.exception("could not settle abandoned delete marks at start")

    def ctx(self, request: Request, res: Resource | None = None) -> RequestContext:
        ctx = self.auth.context(
            {k.lower(): v for k, v in request.headers.items()}, request.scope.get(SCOPE_KEY)
        )
        if res is not None and res.defn.parent_param:  # a sub-resource: name its parent
            ctx = dataclasses.replace(ctx, parent=request.path_params[res.defn.parent_param])
        return ctx

    def base_url(self, request: Request) -> str:
        return str(request.base_url).rstrip("/") + "/v2.0"

    def add_routes(self, app: FastAPI) -> None:
        for res in self.state.resources.values():
            if res.defn.path:
                self._resource_routes(app, res)
            for route in res.extra_routes():
                self._extra_route(app, res, route)
        self._link_creates()

    def _link_creates(self) -> None:
        """OpenAPI links from each create to what the new object's id feeds: every operation
        on `/{collection}/{id}...`, and the creates whose body names it (a subnet's
        `network_id`), so a stateful client can walk from one to the other."""
        by_op = {op.operation_id: (path, op) for path, _, op in self.ops}
        defs = [r.defn for r in self.state.resources.values() if r.defn.path]
        for d in defs:
            if f"create_{d.name}" not in by_op:
                continue
            _, create = by_op[f"create_{d.name}"]
            new_id = f"$response.body#/{d.name}/id"
            item = f"/v2.0/{d.path}/{{id}}"
            for path, op in by_op.values():
                if path == item or path.startswith(f"{item}/"):
                    create.links[op.operation_id] = {
                        "operationId": op.operation_id,
                        "parameters": {"path.id": new_id},
                    }
            for other in defs:
                attr = other.attr(f"{d.name}_id")
                if attr is not None and attr.post and f"create_{other.name}" in by_op:
                    create.links[f"create_{other.name}"] = {
                        "operationId": f"create_{other.name}",
                        "requestBody": {other.name: {attr.name: new_id}},
                    }

    def _route(
        self,
        app: FastAPI,
        path: str,
        method: str,
        fn: Callable[[Request], Awaitable[Response]],
        op: Op,
    ) -> None:
        """Add a route and its description in the OpenAPI document (wyvern.api.openapi)."""
        app.add_api_route(path, fn, methods=[method], name=op.operation_id, include_in_schema=False)
        self.ops.append((path, method, op))

    def openapi(self, app: FastAPI) -> dict[str, Any]:
        info = {"title": app.title, "version": app.version, "description": app.description}
        return openapi.document(
            info,
            self.ops,
            token_auth=self.settings.auth_strategy in ("token", "keystone"),
            noauth_headers=self.settings.noauth_trust_headers,
        )

    def _resource_routes(self, app: FastAPI, res: Resource) -> None:
        d = res.defn
        coll = f"/v2.0/{d.path}"
        item = f"{coll}/{{id}}"

        async def list_(request: Request) -> Response:
            ctx = self.ctx(request, res)
            items = list(request.query_params.multi_items())
            query = parse_query(d, ctx, items, self.settings.pagination_max_limit)
            objs = await run_in_threadpool(res.list_visible, ctx, query)
            all_objs = objs
            if query.marker is not None:
                all_objs = await run_in_threadpool(res.visible_objects, ctx)
            page = sort_objects(query, objs, all_objs)
            body: dict[str, Any] = {d.collection: [res.show(ctx, o, query.fields) for o in page]}
            links = page_links(
                self.base_url(request),
                d.path.format(**request.path_params),
                items,
                page,
                query.limit,
                query.page_reverse,
            )
            if links:
                body[f"{d.collection}_links"] = links
            return json_response(body)

        async def create(request: Request) -> Response:
            ctx = self.ctx(request, res)
            body = await _json_body(request)
            if isinstance(body, dict) and d.collection in body and d.name not in body:
                many = body[d.collection]
                if not isinstance(many, list) or len(body) != 1:
                    raise BadRequest(f"Bulk create expects a list under '{d.collection}'")
                if not many:
                    raise BadRequest("Bulk create needs at least one resource")
                # Neutron takes each item bare or wrapped in the singular key.
                many = [i[d.name] if isinstance(i, dict) and d.name in i else i for i in many]
                objs = await run_in_threadpool(res.create_many, ctx, many)
                return json_response({d.collection: [res.show(ctx, o) for o in objs]}, 201)
            one = _envelope(body, d.name)
            objs = await run_in_threadpool(res.create_many, ctx, [one])
            return json_response({d.name: res.show(ctx, objs[0])}, 201)

        async def show(request: Request) -> Response:
            ctx = self.ctx(request, res)
            id_ = request.path_params["id"]
            fields = [f for f in request.query_params.getlist("fields") if f]

            def load() -> dict[str, Any]:
                obj = res.load(ctx, id_).obj
                res.extend(ctx, [obj])
                return obj

            obj = await run_in_threadpool(load)
            return json_response({d.name: res.show(ctx, obj, fields)})

        async def update(request: Request) -> Response:
            ctx = self.ctx(request, res)
            body = _envelope(await _json_body(request), d.name)
            obj = await run_in_threadpool(
                res.update, ctx, request.path_params["id"], body, _if_match(request)
            )
            return json_response({d.name: res.show(ctx, obj)})

        async def delete(request: Request) -> Response:
            ctx = self.ctx(request, res)  # (only the documented query parameters: the others
            params = {  # are the resources' own, e.g. a cascade's force=True)
                k: v for k, v in request.query_params.items() if k in res.delete_query
            }
            await run_in_threadpool(
                res.delete, ctx, request.path_params["id"], _if_match(request), params
            )
            return json_response(None, 204)

        tag = d.collection
        one = openapi.item_schema(d)
        update_body = {
            "type": "object",
            "required": [d.name],
            "additionalProperties": False,
            "properties": {d.name: openapi_schema(d, "put")},
        }
        self._route(
            app,
            coll,
            "GET",
            list_,
            Op(
                f"list_{d.collection}",
                tag,
                response=openapi.collection_schema(d),
                query=openapi.list_query(d),
                # (a sub-resource's list: its parent may be missing)
                errors=(400, 403, 404, 503) if d.parent_param else (400, 403, 503),
            ),
        )
        self._route(
            app,
            coll,
            "POST",
            create,
            Op(
                f"create_{d.name}",
                tag,
                201,
                openapi.created_schema(d),
                body=openapi.create_body(d, openapi_schema(d, "post")),
                errors=(*ERRORS_WRITE, *res.create_errors),
            ),
        )
        self._route(
            app,
            item,
            "GET",
            show,
            Op(f"show_{d.name}", tag, response=one, query=openapi.fields_query()),
        )
        self._route(
            app,
            item,
            "PUT",
            update,
            Op(
                f"update_{d.name}",
                tag,
                response=one,
                body=update_body,
                headers=[IF_MATCH],
                errors=(*ERRORS_WRITE, 412),
            ),
        )
        self._route(
            app,
            item,
            "DELETE",
            delete,
            Op(
                f"delete_{d.name}",
                tag,
                204,
                query=res.delete_query_doc(),
                headers=[IF_MATCH],
                errors=(*ERRORS_WRITE, 412),
            ),
        )
        if "tags" in d.by_name:
            self._tag_routes(app, res, item, tag)

    def _tag_routes(self, app: FastAPI, res: Resource, item: str, tag: str) -> None:
        async def get_tags(request: Request) -> Response:
            ctx = self.ctx(request)
            obj = await run_in_threadpool(lambda: res.load(ctx, request.path_params["id"]).obj)
            return json_response({"tags": obj.get("tags") or []})

        async def put_tags(request: Request) -> Response:
            ctx = self.ctx(request)
            body = await _json_body(request)
            if not isinstance(body, dict) or "tags" not in body:
                raise BadRequest('Invalid tags body: expected {"tags": [...]}')
            tags = await run_in_threadpool(
                res.set_tags, ctx, request.path_params["id"], body["tags"]
            )
            return json_response({"tags": tags})

        async def delete_tags(request: Request) -> Response:
            ctx = self.ctx(request)
            await run_in_threadpool(res.set_tags, ctx, request.path_params["id"], None)
            return json_response(None, 204)

        async def check_tag(request: Request) -> Response:
            ctx = self.ctx(request)
            obj = await run_in_threadpool(lambda: res.load(ctx, request.path_params["id"]).obj)
            if request.path_params["tag"] not in (obj.get("tags") or []):
                raise NotFound(
                    f"Tag {request.path_params['tag']} could not be found.", type="TagNotFound"
                )
            return json_response(None, 204)

        async def add_tag(request: Request) -> Response:
            ctx = self.ctx(request)
            await run_in_threadpool(
                res.set_tags, ctx, request.path_params["id"], None, request.path_params["tag"]
            )
            return json_response(None, 201)

        async def remove_tag(request: Request) -> Response:
            ctx = self.ctx(request)
            await run_in_threadpool(
                res.set_tags,
                ctx,
                request.path_params["id"],
                None,
                None,
                request.path_params["tag"],
            )
            return json_response(None, 204)

        n = res.defn.name
        tag_list = attr_schema(res.defn.by_name["tags"])
        tags = {"type": "object", "required": ["tags"], "properties": {"tags": tag_list}}
        one = f"{item}/tags/{{tag}}"
        name = {"tag": {"type": "string"}}
        for path, method, fn, op in (
            (f"{item}/tags", "GET", get_tags, Op(f"get_{n}_tags", tag, response=tags)),
            (
                f"{item}/tags",
                "PUT",
                put_tags,
                Op(f"replace_{n}_tags", tag, response=tags, body=tags, errors=ERRORS_WRITE),
            ),
            (
                f"{item}/tags",
                "DELETE",
                delete_tags,
                Op(f"delete_{n}_tags", tag, 204, errors=ERRORS_WRITE),
            ),
            (one, "GET", check_tag, Op(f"check_{n}_tag", tag, 204, path_params=name)),
            (
                one,
                "PUT",
                add_tag,
                Op(f"add_{n}_tag", tag, 201, openapi.NULL, path_params=name, errors=ERRORS_WRITE),
            ),
            (
                one,
                "DELETE",
                remove_tag,
                Op(f"remove_{n}_tag", tag, 204, path_params=name, errors=ERRORS_WRITE),
            ),
        ):
            self._route(app, path, method, fn, op)

    def _extra_route(self, app: FastAPI, res: Resource, route: Route) -> None:
        method, handler = route.method, route.handler
        if (route.body is not None) != (method in ("PUT", "POST")):  # the document would lie
            raise ValueError(f"{method} {route.path}: a JSON body iff PUT or POST")

        async def endpoint(request: Request) -> Response:
            ctx = self.ctx(request)
            body = await _json_body(request) if method in ("PUT", "POST") else None
            params = dict(request.path_params)
            params.update({f"query:{k}": v for k, v in request.query_params.items()})
            result, status = await run_in_threadpool(handler, ctx, params, body)
            return json_response(result, status)

        writes = method in ("PUT", "POST", "DELETE")
        op = Op(
            _operation_id(method, route.path),
            res.defn.collection,
            route.status,
            route.response,
            body=route.body,
            query=route.query,
            path_params=route.path_params,
            errors=ERRORS_WRITE if writes else openapi.ERRORS_READ,
        )
        self._route(app, route.path, method, endpoint, op)

    def discovery_routes(self, app: FastAPI) -> None:
        async def versions(request: Request) -> Response:
            base = str(request.base_url).rstrip("/")
            return json_response(
                {
                    "versions": [
                        {
                            "id": "v2.0",
                            "status": "CURRENT",
                            "links": [{"href": f"{base}/v2.0/", "rel": "self"}],
                        }
                    ]
                }
            )

        async def resources(request: Request) -> Response:
            base = self.base_url(request)
            out = [
                {
                    "name": r.defn.name,
                    "collection": r.defn.collection,
                    "links": [{"href": f"{base}/{r.defn.path}", "rel": "self"}],
                }
                for r in self.state.resources.values()
                if r.defn.path and not r.defn.parent_param  # (Neutron lists no sub-resource)
            ]
            return json_response({"resources": out})

        async def extensions(request: Request) -> Response:
            return json_response({"extensions": [e.body() for e in EXTENSIONS]})

        async def extension(request: Request) -> Response:
            alias = request.path_params["alias"]
            for e in EXTENSIONS:
                if e.alias == alias:
                    return json_response({"extension": e.body()})
            raise NotFound(f"Extension with alias {alias} does not exist", type="NotFound")

        link = {
            "type": "object",
            "required": ["href", "rel"],
            "properties": {"href": {"type": "string"}, "rel": {"type": "string"}},
        }
        links = {"type": "array", "items": link}

        def listing(key: str, props: dict[str, Any]) -> dict[str, Any]:
            item = {"type": "object", "required": list(props), "properties": props}
            return {
                "type": "object",
                "required": [key],
                "properties": {key: {"type": "array", "items": item}},
            }

        string = {"type": "string"}
        ext = {
            "name": string,
            "alias": string,
            "description": string,
            "updated": string,
            "links": {"type": "array"},
        }
        ext_one = {
            "type": "object",
            "required": ["extension"],
            "properties": {
                "extension": {"type": "object", "required": list(ext), "properties": ext}
            },
        }
        alias = {"alias": string}
        discovery = (
            (
                "/",
                versions,
                Op(
                    "list_versions",
                    "discovery",
                    response=listing("versions", {"id": string, "status": string, "links": links}),
                    errors=(503,),
                ),
            ),
            (
                "/v2.0/",
                resources,
                Op(
                    "list_resources",
                    "discovery",
                    response=listing(
                        "resources", {"name": string, "collection": string, "links": links}
                    ),
                    errors=(503,),
                ),
            ),
            (
                "/v2.0/extensions",
                extensions,
                Op(
                    "list_extensions",
                    "discovery",
                    response=listing("extensions", ext),
                    errors=(503,),
                ),
            ),
            (
                "/v2.0/extensions/{alias}",
                extension,
                Op(
                    "show_extension",
                    "discovery",
                    response=ext_one,
                    path_params=alias,
                    errors=(404, 503),
                ),
            ),
        )
        for path, fn, op in discovery:
            self._route(app, path, "GET", fn, op)

        async def metrics(request: Request) -> Response:
            ctx = self.ctx(request)
            text = await run_in_threadpool(metering_metrics.render, self.state, ctx)
            return Response(text, media_type=CONTENT_TYPE_LATEST)

        # Prometheus's, not Neutron's: outside the API document (wyvern.api.metering_metrics)
        app.add_api_route(metering_metrics.PATH, metrics, methods=["GET"], include_in_schema=False)
        # The same as /v2.0/ (clients ask both); documented once.
        app.add_api_route("/v2.0", resources, methods=["GET"], include_in_schema=False)


class _App(FastAPI):
    """FastAPI serving our own OpenAPI document (wyvern.api.openapi), not one it derives
    from the routes' signatures (which say nothing: every route takes a bare Request)."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            self.openapi_schema = self.state.api.openapi(self)
        return self.openapi_schema


def create_app(settings: Settings, store: Store | None = None) -> FastAPI:
    store = store if store is not None else open_store(settings)
    api = Api(settings, store)
    logfilter.install()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Nova notifications (wyvern.api.nova): their own threads, never a request's.
        notifier = NovaNotifier(settings, store).start() if NovaNotifier.enabled(settings) else None
        app.state.nova_notifier = notifier
        yield
        if notifier is not None:
            await run_in_threadpool(notifier.stop)  # (its joins must not block the loop)
        store.close()

    app = _App(
        lifespan=lifespan,
        title="Wyvern Networking API",
        version=wyvern.__version__,
        description="Neutron v2.0 compatible networking API of the Wyvern SDN controller.",
        redirect_slashes=False,
    )
    app.state.api = api

    @app.exception_handler(NeutronError)
    async def neutron_error(request: Request, exc: NeutronError) -> Response:
        return json_response(exc.body(), exc.status, exc.headers)

    @app.exception_handler(TxnTooLarge)
    async def txn_too_large(request: Request, exc: TxnTooLarge) -> Response:
        err = BadRequest(f"Request too large for one store transaction: {exc}")
        return json_response(err.body(), 400)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return json_response(BadRequest(f"Invalid request: {shorten(exc.errors())}").body(), 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            err: NeutronError = NotFound("The resource could not be found.", type="HTTPNotFound")
        elif exc.status_code == 405:
            err = NeutronError(
                "The method is not allowed for the requested URL.",
                type="HTTPMethodNotAllowed",
                status=405,
            )
            err.headers = {"Allow": _allowed_methods(request)}
        else:
            err = NeutronError(str(exc.detail), type="HTTPError", status=exc.status_code)
        return json_response(err.body(), err.status, err.headers)

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> Response:
        """Neutron's answer to a lost database: 503, retry later (the store is down, hung,
        read-only or full: StoreUnavailable, or any other StoreError). The store's own
        timeouts bound the wait (etcd: its request timeout). Logged through the repeat
        filter (wyvern.api.logfilter): one line per minute for the same error."""
        LOG.warning("store error on %s %s: %s", request.method, request.url.path, exc)
        err = ServiceUnavailable("The store is unavailable; please retry.")
        return json_response(err.body(), err.status, err.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        LOG.exception("unexpected error on %s %s", request.method, request.url.path)
        return json_response(
            NeutronError(
                "Request Failed: internal server error while processing your request.",
                type="HTTPInternalServerError",
            ).body(),
            500,
        )

    api.discovery_routes(app)
    api.add_routes(app)
    app.add_middleware(_StripJsonSuffix)
    app.add_middleware(
        BoundedBody,
        max_size=settings.api_max_body_size,
        timeout=settings.api_request_read_timeout,
    )
    if settings.auth_strategy == "keystone":  # before the body is read: auth comes first
        app.add_middleware(KeystoneAuth, opts=settings.keystone_authtoken)
    return app


__all__ = ["create_app", "present"]
