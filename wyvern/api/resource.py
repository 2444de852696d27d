"""The generic resource controller: CRUD, bulk, tags and quotas over the attribute definitions.

Resources with their own rules (ports, subnets, routers, ...) subclass `Resource` and
override the `*_ops` hooks, which add guards and writes to a shared `Txn`. The base class
runs every operation in a retry loop and commits it as one store transaction, so a bulk
create or a cascade delete is all or nothing (except a cascade too big for one etcd
transaction, which deletes the ports in chunks first: Networks._drain_ports).
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from wyvern.api import rbac
from wyvern.api.attributes import (
    ResourceDef,
    Tag,
    now,
    present,
    validate_create,
    validate_update,
)
from wyvern.api.context import RequestContext
from wyvern.api.errors import (
    BadRequest,
    Conflict,
    NeutronError,
    NotFound,
    PreconditionFailed,
    not_found,
)
from wyvern.api.listing import ListQuery, filter_objects
from wyvern.api.policy import Policy
from wyvern.api.repo import INTENT_TTL, Repo, Stored, Txn, with_retries
from wyvern.config import Settings
from wyvern.model.keys import intent_key, uniq_prefix
from wyvern.nb.store import Store, StoreError

MAX_TAGS = 50
# A delete that meets another request's delete of the same object waits for its outcome:
# reads every OTHER_DELETE_POLL seconds, for at most INTENT_TTL + OTHER_DELETE_MARGIN, and
# at most OTHER_DELETE_WAITERS such requests wait at once (each holds a worker thread).
OTHER_DELETE_POLL = 0.1
OTHER_DELETE_MARGIN = 5.0
OTHER_DELETE_WAITERS = 8
Handler = Callable[[RequestContext, dict[str, str], Any], tuple[Any, int]]


@dataclass(frozen=True)
class Route:
    """An action or sub-resource beyond CRUD, and what the API document says of it (see
    wyvern.api.openapi): the JSON body it takes, its success status and body (None: none),
    path parameters that are not uuids, and its query parameters."""

    path: str
    method: str
    handler: Handler
    body: dict[str, Any] | None = None
    status: int = 200
    response: dict[str, Any] | None = None
    path_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    query: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ApiState:
    """What every resource controller shares: no globals, passed in."""

    settings: Settings
    repo: Repo
    resources: dict[str, Resource]
    policy: Policy = field(default_factory=Policy)
    delete_waiters: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(OTHER_DELETE_WAITERS)
    )


class Resource:
    defn: ResourceDef

    def __init__(self, state: ApiState) -> None:
        self.state = state
        self.repo = state.repo
        self.settings = state.settings

    # Error statuses a create may answer beyond ERRORS_WRITE (the API document's).
    create_errors: tuple[int, ...] = ()

    # Query parameters a DELETE passes on to delete() (the others are ignored: delete_ops
    # takes more, e.g. a cascade's force=True, that no client may set).
    delete_query: frozenset[str] = frozenset()

    def delete_query_doc(self) -> list[dict[str, Any]]:
        """The OpenAPI query parameters of DELETE (wyvern.api.openapi)."""
        return []

    def extra_routes(self) -> list[Route]:
        """Actions and sub-resources beyond CRUD."""
        return []

    # ---- policy --------------------------------------------------------------------------
    def policy_target(self, ctx: RequestContext, obj: dict[str, Any]) -> dict[str, Any]:
        """What Neutron's rules read of an object: the object, plus what a resource adds
        of its parents (`network:project_id`, ...). An object shared by RBAC policies is
        `shared` (Neutron's `field:<resource>:shared=True` rules) as the caller sees it:
        shared with its project or with everyone (the stored flag is the wildcard's)."""
        if obj.get("_rbac"):
            return {**obj, "shared": rbac.shared_with(ctx, obj)}
        return obj

    def authorize(
        self,
        ctx: RequestContext,
        action: str,
        obj: dict[str, Any],
        attrs: Iterable[tuple[str, Any]] = (),
    ) -> None:
        """`<action>_<resource>` (or a named action, e.g. add_router_interface) and the
        attributes set, on this object: 403 PolicyNotAuthorized if refused."""
        rule = action if action not in CRUD else f"{action}_{self.defn.name}"
        self.state.policy.enforce(ctx, rule, self.policy_target(ctx, obj), attrs)

    def allowed(self, ctx: RequestContext, rule: str, target: dict[str, Any]) -> bool:
        """A named rule (get_agent, get_quota, ...) on a target: the policy's yes or no."""
        return self.state.policy.check(ctx, rule, target)

    def readable(self, ctx: RequestContext, obj: dict[str, Any]) -> bool:
        """Within the caller's reach (`visible`: their project's, shared, ...) and allowed
        by `get_<resource>`."""
        return self.visible(ctx, obj) and self.state.policy.check(
            ctx, f"get_{self.defn.name}", self.policy_target(ctx, obj)
        )

    # ---- reading -------------------------------------------------------------------------
    def visible(self, ctx: RequestContext, obj: dict[str, Any]) -> bool:
        return not self.defn.owned or ctx.owns(obj)

    def load(self, ctx: RequestContext, id_: str) -> Stored:
        stored = self.repo.get(self.defn.kind, id_)
        if stored is None or not self.readable(ctx, stored.obj):
            raise not_found(self.defn.name, id_)
        return stored

    def load_for_write(self, ctx: RequestContext, id_: str, action: str) -> Stored:
        """404 if the caller may not see it (Neutron hides existence), else 403 if the
        policy refuses the action."""
        stored = self.load(ctx, id_)
        self.authorize(ctx, action, stored.obj)
        return stored

    def all_objects(self) -> list[dict[str, Any]]:
        return self.repo.objects(self.defn.kind)

    def visible_objects(self, ctx: RequestContext) -> list[dict[str, Any]]:
        return [o for o in self.all_objects() if self.readable(ctx, o)]

    def list_visible(self, ctx: RequestContext, query: ListQuery) -> list[dict[str, Any]]:
        objs = filter_objects(self.defn, query, self.visible_objects(ctx))
        self.extend(ctx, objs)
        return objs

    def extend(self, ctx: RequestContext, objs: list[dict[str, Any]]) -> None:
        """Fill derived attributes (e.g. a network's subnets) for a batch of objects."""

    def show(
        self, ctx: RequestContext, obj: dict[str, Any], fields: list[str] | None = None
    ) -> dict[str, Any]:
        out = present(self.defn, ctx, obj, fields)
        return self.state.policy.strip(ctx, self.defn.name, self.policy_target(ctx, obj), out)

    # ---- creating ------------------------------------------------------------------------
    def create_many(self, ctx: RequestContext, bodies: list[Any]) -> list[dict[str, Any]]:
        prepared = [validate_create(self.defn, ctx, b) for b in bodies]
        for body, attrs in zip(bodies, prepared, strict=True):
            self.authorize(ctx, "create", attrs, explicit_attrs(self.defn, body, attrs))
        for attrs in prepared:
            self.check_create(ctx, attrs)

        def attempt() -> list[dict[str, Any]]:
            txn = self.repo.txn()
            objs = [self.create_ops(ctx, dict(attrs), txn) for attrs in prepared]
            self.check_quotas(txn)
            txn.commit()
            return objs

        objs = with_retries(attempt)
        self.after_create(ctx, objs)
        self.extend(ctx, objs)
        return objs

    def check_create(self, ctx: RequestContext, attrs: dict[str, Any]) -> None:
        """Checks that need no store reads (run once, before the retry loop)."""

    def new_object(self, attrs: dict[str, Any]) -> dict[str, Any]:
        stamp = now()
        obj = dict(attrs)
        obj.setdefault("id", str(uuid.uuid4()))
        obj["created_at"] = obj["updated_at"] = stamp
        obj["revision_number"] = 0
        if "tags" in self.defn.by_name:
            obj["tags"] = sorted(set(obj.get("tags") or []))
            if len(obj["tags"]) > MAX_TAGS:
                raise BadRequest(f"Too many tags: at most {MAX_TAGS} are allowed")
        return obj

    def create_ops(self, ctx: RequestContext, attrs: dict[str, Any], txn: Txn) -> dict[str, Any]:
        obj = self.new_object(attrs)
        txn.create(self.defn.kind, obj, self.parent_of(obj), owned=self.defn.owned)
        return obj

    def after_create(self, ctx: RequestContext, objs: list[dict[str, Any]]) -> None:
        """Hook after a successful commit."""

    def parent_of(self, obj: dict[str, Any]) -> str | None:
        return obj[self.defn.parent_attr] if self.defn.parent_attr else None

    def check_quotas(self, txn: Txn) -> None:
        if self.defn.quota is None:
            return
        quotas: QuotaReader = self.state.resources["quota"]  # type: ignore[assignment]
        for (project, kind), n in txn.created_owned.items():
            if kind != self.defn.kind:
                continue
            limit = quotas.limit(project, self.defn.quota)
            if limit >= 0 and self.repo.count_owned(project, kind) + n > limit:
                raise Conflict(
                    f"Quota exceeded for resources: ['{self.defn.quota}'].", type="OverQuota"
                )

    # ---- updating ------------------------------------------------------------------------
    def update(
        self, ctx: RequestContext, id_: str, body: Any, if_match: int | None
    ) -> dict[str, Any]:
        changes = validate_update(self.defn, ctx, body)

        def attempt() -> dict[str, Any]:
            stored = self.load_for_write(ctx, id_, "update")
            self.authorize(
                ctx, "update", {**stored.obj, **changes}, [(k, body[k]) for k in changes]
            )
            check_revision(stored, if_match)
            txn = self.repo.txn()
            self.update_ops(ctx, stored, changes, txn)
            touch(stored.obj)
            txn.update(stored)
            txn.commit()
            return stored.obj

        obj = with_retries(attempt)
        self.extend(ctx, [obj])
        return obj

    def update_ops(
        self, ctx: RequestContext, stored: Stored, changes: dict[str, Any], txn: Txn
    ) -> None:
        stored.obj.update(changes)

    # ---- deleting ------------------------------------------------------------------------
    def delete(
        self, ctx: RequestContext, id_: str, if_match: int | None, params: dict[str, str]
    ) -> None:
        def attempt() -> None:
            stored = self.load_for_write(ctx, id_, "delete")
            check_revision(stored, if_match)
            txn = self.repo.txn()
            self.delete_ops(ctx, stored, txn, params)
            txn.commit()

        with_retries(attempt)

    def delete_ops(
        self, ctx: RequestContext, stored: Stored, txn: Txn, params: dict[str, str]
    ) -> None:
        txn.delete(self.defn.kind, stored, owned=self.defn.owned)

    # ---- tags ----------------------------------------------------------------------------
    def set_tags(
        self,
        ctx: RequestContext,
        id_: str,
        tags: list[str] | None,
        add: str | None = None,
        remove: str | None = None,
    ) -> list[str]:
        if tags is not None:
            tags = [self.defn.by_name["tags"].convert([t])[0] for t in _as_list(tags)]
        if add is not None:
            Tag_check(add)

        def attempt() -> list[str]:
            stored = self.load_for_write(ctx, id_, "update")
            current = set(stored.obj.get("tags") or [])
            if tags is not None:
                new = set(tags)
            elif add is not None:
                new = current | {add}
            else:
                if remove is not None and remove not in current:
                    raise NotFound(f"Tag {remove} could not be found.", type="TagNotFound")
                new = current - {remove} if remove is not None else set()
            if len(new) > MAX_TAGS:
                raise BadRequest(f"Too many tags: at most {MAX_TAGS} are allowed")
            if new != current:
                stored.obj["tags"] = sorted(new)
                touch(stored.obj)
                txn = self.repo.txn()
                txn.update(stored)
                txn.commit()
            return sorted(new)

        return with_retries(attempt)

    # Bound last so `list[...]` annotations above still mean the builtin.
    list = list_visible


class _Intent:
    """A store lease this process keeps alive while it deletes: the intent key behind a
    `_deleting` mark is put with it, so if the process dies the store drops the intent
    and the next reader undoes the mark (Repo._settled) instead of leaving a zombie."""

    def __init__(self, store: Store, ttl: float = INTENT_TTL) -> None:
        self.store = store
        self.lease = store.grant(ttl)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._keep, args=(ttl / 3,), name="wyvern-delete-intent", daemon=True
        )
        self._thread.start()

    def _keep(self, every: float) -> None:
        while not self._stop.wait(every):
            with contextlib.suppress(StoreError):
                self.store.keepalive(self.lease)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(StoreError):
            self.store.revoke(self.lease)  # (drops the intent if anything left it)


def delete_marked(
    res: Resource,
    ctx: RequestContext,
    id_: str,
    if_match: int | None,
    params: dict[str, str],
    checks: Callable[[RequestContext, Stored], None] | None = None,
) -> None:
    """Mark, then delete: creators that `require` the object (guard its revision) retry and
    then see it gone, so the users found after the mark are all there will ever be.
    `checks` runs before the mark (cheap refusals need no write); delete_ops checks again.

    Crash-safe: the mark is written with an intent key on this process's lease, and the
    delete (or the undoing of the mark) removes both in one transaction. A process that
    dies between them leaves a mark without an intent once its lease runs out, which any
    API process undoes on its next read of the object (and at start). A delete that meets
    another's mark waits for its outcome (`_await_other_delete`)."""
    kind = res.defn.kind
    intent = _Intent(res.repo.store)
    try:

        def mark() -> None:
            _await_other_delete(res, ctx, id_)
            stored = res.load_for_write(ctx, id_, "delete")
            check_revision(stored, if_match)
            if checks is not None:
                checks(ctx, stored)
            stored.obj["_deleting"] = True
            txn = res.repo.txn()
            txn.update(stored)
            txn.put_leased(intent_key(kind, id_), b"delete", intent.lease)
            txn.commit()

        with_retries(mark)
        try:

            def attempt() -> None:
                stored = res.repo.get(kind, id_)
                if stored is None:
                    return
                if not stored.obj.get("_deleting"):  # our mark was undone: we were
                    raise Conflict(  # presumed dead (the lease ran out), so stop here
                        f"The delete of {res.defn.name} {id_} was interrupted; retry it."
                    )
                txn = res.repo.txn()
                txn.release(intent_key(kind, id_))  # (first: delete_ops may measure txn)
                res.delete_ops(ctx, stored, txn, params)
                txn.commit()

            with_retries(attempt)
        except BaseException:

            def unmark() -> None:
                stored = res.repo.get(kind, id_)
                if stored is not None and stored.obj.pop("_deleting", None):
                    txn = res.repo.txn()
                    txn.update(stored)
                    txn.release(intent_key(kind, id_))
                    txn.commit()

            with_retries(unmark)
            raise
    finally:
        intent.close()


def _await_other_delete(res: Resource, ctx: RequestContext, id_: str) -> None:
    """The object is marked by another request's delete, whose process still holds its
    intent: wait for that delete's outcome instead of answering 404 at once. The object is
    then gone (404, truly), or unmarked (the delete was refused, or its process died and
    its lease ran out: a client retrying a delete cut by a crash lands here) and this
    delete runs. Still marked after a whole INTENT_TTL and more, or with too many requests
    waiting already, the answer is 409: the delete is in progress."""

    def marked() -> bool:
        stored = res.repo.get(res.defn.kind, id_)  # (settles a mark whose intent is gone)
        # Only who may delete it waits; the others are answered at once.
        return stored is not None and bool(stored.obj.get("_deleting")) and ctx.owns(stored.obj)

    if not marked():
        return
    busy = Conflict(f"The {res.defn.name} {id_} is being deleted by another request; retry.")
    waiters = res.state.delete_waiters
    if not waiters.acquire(blocking=False):
        raise busy
    try:
        deadline = time.monotonic() + INTENT_TTL + OTHER_DELETE_MARGIN
        while marked():
            if time.monotonic() >= deadline:
                raise busy
            time.sleep(OTHER_DELETE_POLL)
    finally:
        waiters.release()


CRUD = frozenset({"create", "get", "update", "delete"})


def explicit_attrs(defn: ResourceDef, body: Any, attrs: dict[str, Any]) -> list[tuple[str, Any]]:
    """The attributes a create sets explicitly, which attribute rules then check: those the
    body names, but not one at the default Neutron declares for it (`shared=false`)."""
    out = []
    for name in body:
        attr = defn.by_name[name]
        if attr.default_passes_policy and attrs[name] == attr.make_default():
            continue
        out.append((name, body[name]))  # (as sent: sub-attribute rules see the keys named)
    return out


class QuotaReader(Resource):
    def limit(self, project: str, resource: str) -> int:
        raise NotImplementedError


def _as_list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise BadRequest("Invalid tags body: expected a list of strings")
    return value


def Tag_check(tag: str) -> None:
    from pydantic import TypeAdapter, ValidationError

    try:
        TypeAdapter(Tag).validate_python(tag)
    except ValidationError:
        raise BadRequest(f"Invalid tag '{tag[:300]}': 1 to 255 characters") from None


def touch(obj: dict[str, Any]) -> None:
    obj["revision_number"] = int(obj.get("revision_number", 0)) + 1
    obj["updated_at"] = now()


def check_revision(stored: Stored, if_match: int | None) -> None:
    if if_match is not None and stored.obj.get("revision_number") != if_match:
        raise PreconditionFailed(
            f"Constrained revision_number {if_match} does not match "
            f"current revision_number {stored.obj.get('revision_number')}.",
            type="RevisionNumberConstraintFailed",
        )


def free_key(repo: Repo, txn: Txn, kind: str, limit: int, exhausted: NeutronError) -> int:
    """A free integer key among those claimed under uniq/KIND/ (network and router
    datapath keys, address scope keys): the lowest few free, one picked at random, so
    concurrent creators rarely collide (the claim decides); EXHAUSTED when none is."""
    used = {int(k) for k in repo.claims(uniq_prefix(kind))}
    used |= {int(k.rsplit("/", 1)[1]) for k in txn.claimed if f"/uniq/{kind}/" in k}
    free: list[int] = []
    n = 1
    while len(free) < 8 and n <= limit:
        if n not in used:
            free.append(n)
        n += 1
    if not free:
        raise exhausted
    return random.choice(free)


class SharedByRbac(Resource):
    """A resource RBAC shares (`access_as_shared`): its owner and the projects a policy
    shares it with see it, and `shared` is shown as the caller sees it (wyvern.api.rbac)."""

    def visible(self, ctx: RequestContext, obj: dict[str, Any]) -> bool:
        return rbac.visible(ctx, obj, (rbac.SHARED,))

    def visible_objects(self, ctx: RequestContext) -> list[dict[str, Any]]:
        objs = super().visible_objects(ctx)
        rbac.show_shared(ctx, objs)
        return objs

    def extend(self, ctx: RequestContext, objs: list[dict[str, Any]]) -> None:
        rbac.show_shared(ctx, objs)
