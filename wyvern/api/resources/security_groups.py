"""Security groups and their rules, with Neutron's semantics plus inline rules on create.

Invariants that hold with several API replicas writing at once (never read-then-write):
- one `default` group per project: `uniq/default_sg/<project>` is claimed in the same
  transaction as the group and its four rules; a loser re-reads the winner's id;
- no duplicate rule in a group: `uniq/sgrule/<group>/<sha1 of the normalised rule>` is
  claimed with the rule and released with it;
- nothing refers to a deleted group or address group: a delete first marks the object
  (bumping its store revision), every creator `require`s what it refers to, so a racing
  creator retries and then finds it gone; the delete checks for users after the mark.
"""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Annotated, Any, Literal

import orjson
from pydantic import BeforeValidator

from wyvern.api import rbac
from wyvern.api.attributes import (
    Attr,
    Description,
    ProjectId,
    ResourceDef,
    Tag,
    standard_attrs,
    validate_create,
    validate_update,
)
from wyvern.api.context import RequestContext, admin_context
from wyvern.api.errors import (
    BadRequest,
    NeutronError,
    NotFound,
    bad_request,
    conflict,
    not_found,
)
from wyvern.api.listing import ListQuery, filter_objects
from wyvern.api.repo import Stored, Txn, with_retries
from wyvern.api.resource import Resource, SharedByRbac, delete_marked, explicit_attrs, touch
from wyvern.api.types import Bool, ShortStr
from wyvern.model.keys import uniq_key
from wyvern.model.protocols import LEGACY_NAMES, PROTOCOL_NUMBERS

# ---- protocol tables (neutron-lib constants) -----------------------------------------------
SUPPORTED_PROTOCOLS = [None, "any", *sorted(PROTOCOL_NUMBERS), *LEGACY_NAMES]
PORT_PROTOCOLS = {6, 17, 136, 132, 33}  # tcp, udp, udplite, sctp, dccp
PORT_PROTOCOL_NAMES = "TCP, UDP, SCTP"  # (Neutron also lists UDPLITE and DCCP: see below)
# Neutron takes port ranges for these, but OpenFlow has no field for their ports: a
# range could not be enforced, so it is refused (the protocol alone is fine).
UNMATCHABLE_PORT_PROTOCOLS = {33: "DCCP", 136: "UDP-Lite"}
ICMP_PROTOCOLS = {1, 58}
IPV6_ONLY_PROTOCOLS = {41, 44, 58, 59, 60, 43}
# IPv6 extension headers Open vSwitch skips to classify a packet by its upper-layer
# protocol: an IPv6 rule naming one could never match, so it is refused.
IPV6_SKIPPED_HEADERS = {0, 43, 44, 51, 60}  # hopopt, ipv6-route, ipv6-frag, ah, ipv6-opts
ETHERTYPES = ("IPv4", "IPv6")
DEFAULT_SG_DESCRIPTION = "Default security group"


def _shown(value: Any) -> str:
    """Echo user input in messages, but never megabytes of it."""
    text = str(value)
    return text if len(text) <= 64 else text[:64] + "..."


# ---- attribute converters: they raise Neutron's own error types ----------------------------
def _protocol(value: Any) -> str | None:
    """Neutron's convert_protocol: a known name (any case) or 0-255; 'any' and 0 mean all."""
    invalid = bad_request(
        "SecurityGroupRuleInvalidProtocol",
        f"Security group rule protocol {_shown(value)} not supported. Only protocol values "
        f"{SUPPORTED_PROTOCOLS} and integer representations [0 to 255] are supported.",
    )
    if value is None:
        return None
    if isinstance(value, bool):
        raise invalid
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        text = value.lower()
        if text in ("", "any"):
            return None
        if text in PROTOCOL_NUMBERS or text in LEGACY_NAMES:
            return text
        if not (text.isascii() and text.isdigit() and len(text) <= 3):
            raise invalid
        number = int(text)
    else:
        raise invalid
    if not 0 <= number <= 255:
        raise invalid
    return None if number == 0 else str(number)


def _port(value: Any) -> int | None:
    """Neutron's convert_validate_port_value: an integer (or digit string) 0-65535."""
    invalid = bad_request(
        "SecurityGroupInvalidPortValue", f"Invalid value for port {_shown(value)}"
    )
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise invalid
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit() and len(value) <= 5):
            raise invalid
        value = int(value)
    if not isinstance(value, int) or not 0 <= value <= 65535:
        raise invalid
    return value


def _ethertype(value: Any) -> str:
    if isinstance(value, str):
        for ethertype in ETHERTYPES:
            if value.lower() == ethertype.lower():
                return ethertype
    raise ValueError(f"must be one of {list(ETHERTYPES)}")


def _remote_prefix(value: Any) -> str | None:
    """Neutron keeps the given address (an IP gets /32 or /128); see normalized_cidr."""
    if value is None or value == "":
        return None
    invalid = bad_request("InvalidCIDR", f"Invalid CIDR {_shown(value)} given as IP prefix.")
    if not isinstance(value, str) or len(value) > 64 or "%" in value:
        raise invalid
    try:
        return str(ipaddress.ip_interface(value))
    except ValueError:
        raise invalid from None


Protocol = Annotated[str | None, BeforeValidator(_protocol)]
PortValue = Annotated[int | None, BeforeValidator(_port)]
Ethertype = Annotated[str, BeforeValidator(_ethertype)]
RemotePrefix = Annotated[str | None, BeforeValidator(_remote_prefix)]


# ---- errors ----------------------------------------------------------------------------------
def sg_not_found(id_: str) -> NotFound:
    return NotFound(f"Security group {_shown(id_)} does not exist", type="SecurityGroupNotFound")


def rule_not_found(id_: str) -> NotFound:
    return NotFound(
        f"Security group rule {_shown(id_)} does not exist", type="SecurityGroupRuleNotFound"
    )


def sg_in_use(id_: str) -> NeutronError:
    return conflict("SecurityGroupInUse", f"Security Group {id_} in use.")


def default_exists() -> NeutronError:
    return conflict("SecurityGroupDefaultAlreadyExists", "Default security group already exists.")


def cannot_update_default() -> NeutronError:
    return conflict(
        "SecurityGroupCannotUpdateDefault", "Updating default security group not allowed."
    )


def cannot_remove_default() -> NeutronError:
    return conflict(
        "SecurityGroupCannotRemoveDefault",
        "Insufficient rights for removing default security group.",
    )


def duplicate_in_post() -> NeutronError:
    return conflict("DuplicateSecurityGroupRuleInPost", "Duplicate Security Group Rule in POST.")


# ---- definitions -----------------------------------------------------------------------------
SG_DEFN = ResourceDef(
    name="security_group",
    collection="security_groups",
    path="security-groups",
    kind="security_groups",
    quota="security_group",
    attrs=(
        *standard_attrs(),
        Attr("stateful", Bool, post=True, put=True, default=True, filter=True, sort=True),
        Attr("shared", Bool, default=False, filter=True, sort=True),
        Attr(
            "security_group_rules",
            list[dict[str, Any]],
            post=True,
            default_factory=list,
            doc="Beyond Neutron: rules (without security_group_id) created with the group.",
        ),
    ),
)

RULE_DEFN = ResourceDef(
    name="security_group_rule",
    collection="security_group_rules",
    path="security-group-rules",
    kind="security_group_rules",
    parent_attr="security_group_id",
    quota="security_group_rule",
    attrs=(
        Attr("id", str, filter=True, sort=True),
        Attr("security_group_id", ShortStr, post=True, required=True, filter=True, sort=True),
        Attr(
            "direction",
            Literal["ingress", "egress"],
            post=True,
            required=True,
            filter=True,
            sort=True,
        ),
        Attr("ethertype", Ethertype, post=True, default="IPv4", filter=True, sort=True),
        Attr("protocol", Protocol, post=True, default=None, filter=True, sort=True),
        Attr("port_range_min", PortValue, post=True, default=None, filter=True, sort=True),
        Attr("port_range_max", PortValue, post=True, default=None, filter=True, sort=True),
        Attr("remote_ip_prefix", RemotePrefix, post=True, default=None, filter=True, sort=True),
        Attr("remote_group_id", ShortStr | None, post=True, default=None, filter=True, sort=True),
        Attr(
            "remote_address_group_id",
            ShortStr | None,
            post=True,
            default=None,
            filter=True,
            sort=True,
        ),
        Attr("normalized_cidr", str | None, filter=True, sort=True),
        Attr("belongs_to_default_sg", Bool, filter=True),
        Attr("description", Description, post=True, default="", filter=True, sort=True),
        Attr("project_id", ProjectId, post=True, filter=True, sort=True),
        Attr("tenant_id", ProjectId, post=True, filter=True, sort=True),
        Attr("created_at", str, filter=True, sort=True),
        Attr("updated_at", str, filter=True, sort=True),
        Attr("revision_number", int, filter=True, sort=True),
        Attr("tags", list[Tag], post=True, default_factory=list),
    ),
)


# ---- rule normalisation ----------------------------------------------------------------------
def protocol_number(protocol: str | None) -> int | None:
    if protocol is None:
        return None
    if protocol in PROTOCOL_NUMBERS:
        return PROTOCOL_NUMBERS[protocol]
    if protocol in LEGACY_NAMES:
        return LEGACY_NAMES[protocol]
    return int(protocol)


def _check_ports(protocol: str | None, pmin: int | None, pmax: int | None) -> None:
    """Neutron's _validate_port_range: ports for port protocols, type/code for ICMP."""
    if pmin is None and pmax is None:
        return
    if protocol is None:
        raise bad_request(
            "SecurityGroupProtocolRequiredWithPorts",
            "Must also specify protocol if port range is given.",
        )
    number = protocol_number(protocol)
    if number in UNMATCHABLE_PORT_PROTOCOLS:
        raise bad_request(
            "SecurityGroupInvalidProtocolForPort",
            f"Invalid protocol {protocol} for port range: the dataplane cannot match "
            f"{UNMATCHABLE_PORT_PROTOCOLS[number]} ports, so the range could not be enforced. "
            "Omit port_range_min and port_range_max to allow the protocol on every port.",
        )
    if number in PORT_PROTOCOLS:
        if pmin == 0 or pmax == 0:
            raise bad_request("SecurityGroupInvalidPortValue", "Invalid value for port 0")
        if pmin is None or pmax is None or pmin > pmax:
            raise bad_request(
                "SecurityGroupInvalidPortRange",
                "For TCP/UDP protocols, port_range_min must be <= port_range_max",
            )
    elif number in ICMP_PROTOCOLS:
        for value, field, attr in (
            (pmin, "type", "port_range_min"),
            (pmax, "code", "port_range_max"),
        ):
            if value is not None and not 0 <= value <= 255:
                raise bad_request(
                    "SecurityGroupInvalidIcmpValue",
                    f"Invalid value for ICMP {field} ({attr}) {value}. It must be 0 to 255.",
                )
        if pmin is None:
            raise bad_request(
                "SecurityGroupMissingIcmpType",
                f"ICMP code (port-range-max) {pmax} is provided but ICMP type "
                "(port-range-min) is missing.",
            )
    else:
        raise bad_request(
            "SecurityGroupInvalidProtocolForPort",
            f"Invalid protocol {protocol} for port range, only supported for "
            f"{PORT_PROTOCOL_NAMES} protocols.",
        )


def normalise_rule(attrs: dict[str, Any]) -> None:
    """Neutron's pure rule checks, in its order; canonicalises `attrs` in place."""
    ethertype = attrs["ethertype"]
    protocol = attrs.get("protocol")
    if ethertype == "IPv6":
        if protocol in ("icmp", "icmpv6"):
            protocol = "ipv6-icmp"
        elif protocol == "1":
            protocol = "58"
    attrs["protocol"] = protocol
    _check_ports(protocol, attrs.get("port_range_min"), attrs.get("port_range_max"))
    prefix = attrs.get("remote_ip_prefix")
    attrs["normalized_cidr"] = None
    if prefix is not None:
        iface = ipaddress.ip_interface(prefix)
        if ethertype != f"IPv{iface.version}":
            raise bad_request(
                "SecurityGroupRuleParameterConflict",
                f"Conflicting value ethertype {ethertype} for CIDR {prefix}",
            )
        attrs["normalized_cidr"] = str(iface.network)
    if ethertype == "IPv4" and protocol_number(protocol) in IPV6_ONLY_PROTOCOLS:
        raise bad_request(
            "SecurityGroupEthertypeConflictWithProtocol",
            f"Invalid ethertype {ethertype} for protocol {protocol}.",
        )
    if ethertype == "IPv6" and protocol_number(protocol) in IPV6_SKIPPED_HEADERS:
        raise bad_request(
            "SecurityGroupRuleInvalidProtocol",
            f"Security group rule protocol {protocol} not supported in IPv6 rules: it is an "
            "IPv6 extension header, which the dataplane skips to classify a packet by its "
            "upper-layer protocol, so the rule could never match.",
        )
    remotes = [
        k
        for k in ("remote_ip_prefix", "remote_group_id", "remote_address_group_id")
        if attrs.get(k)
    ]
    if remotes == ["remote_ip_prefix", "remote_group_id"]:
        raise bad_request(
            "SecurityGroupRemoteGroupAndRemoteIpPrefix",
            "Only remote_ip_prefix or remote_group_id may be provided.",
        )
    if len(remotes) > 1:
        raise bad_request(
            "SecurityGroupMultipleRemoteEntites",
            "Only one of remote_ip_prefix or remote_group_id or remote_address_group_id "
            "may be provided.",
        )


def rule_digest(attrs: dict[str, Any]) -> str:
    """What makes two rules of a group the same rule (Neutron's _rule_to_key, normalised:
    protocol by number, CIDR by network, and 0.0.0.0/0 or ::/0 the same as no prefix)."""
    cidr = attrs.get("normalized_cidr")
    if cidr in ("0.0.0.0/0", "::/0"):
        cidr = None
    parts = [
        attrs["direction"],
        attrs["ethertype"],
        protocol_number(attrs.get("protocol")),
        attrs.get("port_range_min"),
        attrs.get("port_range_max"),
        attrs.get("remote_group_id"),
        attrs.get("remote_address_group_id"),
        cidr,
    ]
    return hashlib.sha1(orjson.dumps(parts), usedforsecurity=False).hexdigest()


def rule_claim(group_id: str, digest: str) -> str:
    return uniq_key("sgrule", group_id, digest)


def base_rule(direction: str, ethertype: str, remote_group_id: str | None = None) -> dict[str, Any]:
    """A complete rule attribute set with every default: the automatic rules."""
    attrs = {a.name: a.make_default() for a in RULE_DEFN.attrs if a.post and a.has_default()}
    attrs.update(direction=direction, ethertype=ethertype, remote_group_id=remote_group_id)
    attrs["normalized_cidr"] = None
    return attrs


# ---- security groups -------------------------------------------------------------------------
def _check_name(name: str) -> None:
    if name.lower() == "default":
        raise default_exists()


class SecurityGroups(SharedByRbac):
    defn = SG_DEFN

    @property
    def rules(self) -> SecurityGroupRules:
        res = self.state.resources["security_group_rule"]
        assert isinstance(res, SecurityGroupRules)
        return res

    # ---- reading --------------------------------------------------------------------------
    def all_objects(self) -> list[dict[str, Any]]:
        return [o for o in self.repo.objects(self.defn.kind) if not o.get("_deleting")]

    def load(self, ctx: RequestContext, id_: str) -> Stored:
        stored = self.repo.get(self.defn.kind, id_)
        if stored is None or stored.obj.get("_deleting") or not self.visible(ctx, stored.obj):
            raise sg_not_found(id_)
        return stored

    def list_visible(self, ctx: RequestContext, query: ListQuery) -> list[dict[str, Any]]:
        """Listing creates the caller's default group first, as Neutron does (an admin
        filtering on one project gets that project's)."""
        project = ctx.project_id
        wanted = query.filters.get("project_id") or query.filters.get("tenant_id")
        if ctx.is_admin and wanted and len(wanted) == 1:
            project = wanted[0]
        self.ensure_default(project)
        return super().list_visible(ctx, query)

    def extend(self, ctx: RequestContext, objs: list[dict[str, Any]]) -> None:
        """security_group_rules, from one store list whatever the number of groups."""
        super().extend(ctx, objs)
        if not objs:
            return
        if len(objs) == 1:
            rules = self.repo.objects(RULE_DEFN.kind, objs[0]["id"])
        else:
            rules = self.repo.objects(RULE_DEFN.kind)
        by_group: dict[str, list[dict[str, Any]]] = {}
        for rule in rules:
            by_group.setdefault(rule["security_group_id"], []).append(rule)
        for obj in objs:
            mine = sorted(by_group.get(obj["id"], []), key=lambda r: (r["created_at"], r["id"]))
            obj["security_group_rules"] = [self.rules.show(ctx, r) for r in mine]

    def ports_using(self, group_id: str) -> list[str]:
        """Ids of the ports that use a group (one store list)."""
        return [
            p["id"]
            for p in self.repo.objects("ports")
            if group_id in (p.get("security_groups") or [])
        ]

    # ---- for ports ------------------------------------------------------------------------
    def ensure_default(self, project_id: str) -> str:
        """The id of the project's `default` group, created (with its four rules) on first
        use. Concurrent first uses race on one claim; the losers return the winner's id."""
        key = uniq_key("default_sg", project_id)
        ctx = admin_context(project_id)

        def attempt() -> str:
            owner = self.repo.claim_owner(key)
            if owner is not None:
                return owner
            txn = self.repo.txn()
            obj = self.new_object(
                {
                    "name": "default",
                    "description": DEFAULT_SG_DESCRIPTION,
                    "project_id": project_id,
                    "tenant_id": project_id,
                    "stateful": True,
                    "shared": False,
                    "tags": [],
                }
            )
            obj["_default"] = True
            txn.claim(key, obj["id"], None)
            txn.create(self.defn.kind, obj)
            for ethertype in ETHERTYPES:
                self.rules.add_rule(ctx, obj, base_rule("egress", ethertype), txn, new_group=True)
                self.rules.add_rule(
                    ctx, obj, base_rule("ingress", ethertype, obj["id"]), txn, new_group=True
                )
            txn.commit()
            return str(obj["id"])

        return with_retries(attempt)

    def group_for_port(self, group_id: str, project_id: str) -> Stored:
        """A group a port of `project_id` may use. Port writes must `txn.require()` it, so
        that a concurrent group delete (which marks the group first) makes them retry."""
        stored = self.repo.get(self.defn.kind, group_id)
        if (
            stored is None
            or stored.obj.get("_deleting")
            or not rbac.project_may_use(self.repo, project_id, stored.obj, rbac.SHARED)
        ):  # (its own, or shared with the port's project: wyvern.api.rbac)
            raise sg_not_found(group_id)
        return stored

    # ---- creating -------------------------------------------------------------------------
    def create_many(self, ctx: RequestContext, bodies: list[Any]) -> list[dict[str, Any]]:
        """Validate everything first, then make sure each owner has its default group (as
        Neutron does before creating any other group), then create."""
        projects: list[str] = []
        for body in bodies:
            attrs = validate_create(self.defn, ctx, body)
            self.authorize(ctx, "create", attrs, explicit_attrs(self.defn, body, attrs))
            self.check_create(ctx, attrs)
            if attrs["project_id"] not in projects:
                projects.append(attrs["project_id"])
        for project in projects:
            self.ensure_default(project)
        return super().create_many(ctx, bodies)

    def check_create(self, ctx: RequestContext, attrs: dict[str, Any]) -> None:
        _check_name(attrs["name"])
        attrs["security_group_rules"] = [
            self.rules.prepare_inline(ctx, body) for body in attrs.get("security_group_rules") or []
        ]

    def create_ops(self, ctx: RequestContext, attrs: dict[str, Any], txn: Txn) -> dict[str, Any]:
        inline: list[dict[str, Any]] = attrs.pop("security_group_rules", [])
        obj = self.new_object(attrs)
        obj["shared"] = False
        txn.create(self.defn.kind, obj, owned=True)
        automatic: set[str] = set()
        for ethertype in ETHERTYPES:
            rule = self.rules.add_rule(
                ctx, obj, base_rule("egress", ethertype), txn, new_group=True
            )
            automatic.add(rule["_digest"])
        for rule_attrs in inline:
            if rule_digest(rule_attrs) in automatic:
                continue  # the same as an automatic egress rule
            self.rules.add_rule(ctx, obj, dict(rule_attrs), txn, new_group=True)
        return obj

    def check_quotas(self, txn: Txn) -> None:
        """Groups and, like Neutron's reservation, the rules created with them."""
        super().check_quotas(txn)
        self.rules.check_quotas(txn)

    # ---- updating -------------------------------------------------------------------------
    def update_ops(
        self, ctx: RequestContext, stored: Stored, changes: dict[str, Any], txn: Txn
    ) -> None:
        obj = stored.obj
        if "name" in changes:
            if obj.get("_default"):
                raise cannot_update_default()
            _check_name(changes["name"])
        stateful_change = "stateful" in changes and changes["stateful"] != obj.get("stateful")
        if stateful_change and self.ports_using(obj["id"]):
            raise sg_in_use(obj["id"])
        obj.update(changes)

    # ---- deleting -------------------------------------------------------------------------
    def delete(
        self, ctx: RequestContext, id_: str, if_match: int | None, params: dict[str, str]
    ) -> None:
        delete_marked(self, ctx, id_, if_match, params, self.delete_checks)

    def delete_checks(self, ctx: RequestContext, stored: Stored) -> None:
        if self.ports_using(stored.obj["id"]):
            raise sg_in_use(stored.obj["id"])
        if stored.obj.get("_default") and not ctx.is_admin:
            raise cannot_remove_default()

    def delete_ops(
        self, ctx: RequestContext, stored: Stored, txn: Txn, params: dict[str, str]
    ) -> None:
        """The group, its rules and (Neutron's cascade) other groups' rules naming it."""
        group = stored.obj
        self.delete_checks(ctx, stored)
        for rule in self.repo.scan(RULE_DEFN.kind):
            r = rule.obj
            if r.get("security_group_id") == group["id"] or r.get("remote_group_id") == group["id"]:
                self.rules.delete_ops(ctx, rule, txn, params)
        if group.get("_default"):
            txn.release(uniq_key("default_sg", group["project_id"]))
        rbac.drop_all(self.repo, txn, group, "security_group")
        txn.delete(self.defn.kind, stored)


# ---- security group rules --------------------------------------------------------------------
class SecurityGroupRules(Resource):
    defn = RULE_DEFN

    def policy_target(self, ctx: RequestContext, obj: dict[str, Any]) -> dict[str, Any]:
        """Neutron's rule policies read the group's owner (a rule has its group's project;
        a new rule's group the caller cannot see is its 404)."""
        if "id" in obj:
            return {**obj, "security_group:project_id": obj.get("project_id")}
        groups: SecurityGroups = self.state.resources["security_group"]  # type: ignore[assignment]
        group = groups.load(ctx, str(obj.get("security_group_id")))
        return {**obj, "security_group:project_id": group.obj.get("project_id")}

    def load(self, ctx: RequestContext, id_: str) -> Stored:
        stored = self.repo.get(self.defn.kind, id_)
        if stored is None or not self.visible(ctx, stored.obj):
            raise rule_not_found(id_)
        return stored

    def list_visible(self, ctx: RequestContext, query: ListQuery) -> list[dict[str, Any]]:
        """Filtering on one group reads only that group's keys."""
        groups = query.filters.get("security_group_id")
        if groups and len(groups) == 1:
            objs = [o for o in self.repo.objects(self.defn.kind, groups[0]) if self.visible(ctx, o)]
            return filter_objects(self.defn, query, objs)
        return super().list_visible(ctx, query)

    def check_create(self, ctx: RequestContext, attrs: dict[str, Any]) -> None:
        normalise_rule(attrs)

    def prepare_inline(self, ctx: RequestContext, body: dict[str, Any]) -> dict[str, Any]:
        """A rule given inline in a group's POST: validated like a rule POST body."""
        if "security_group_id" in body:
            raise BadRequest(
                "Attribute 'security_group_id' not allowed in inline security_group_rules"
            )
        attrs = validate_create(self.defn, ctx, {**body, "security_group_id": ""})
        normalise_rule(attrs)
        return attrs

    def create_ops(self, ctx: RequestContext, attrs: dict[str, Any], txn: Txn) -> dict[str, Any]:
        groups: SecurityGroups = self.state.resources["security_group"]  # type: ignore[assignment]
        group = groups.load(ctx, attrs["security_group_id"])
        rule = self.add_rule(ctx, group.obj, attrs, txn)
        # Neutron revises a group on any change to its rules; the guarded write also makes
        # a concurrent delete of the group retry this.
        touch(group.obj)
        txn.update(group)
        return rule

    def add_rule(
        self,
        ctx: RequestContext,
        group: dict[str, Any],
        attrs: dict[str, Any],
        txn: Txn,
        *,
        new_group: bool = False,
    ) -> dict[str, Any]:
        """Write one normalised rule into `group` (a group being created with `new_group`)."""
        attrs["security_group_id"] = group["id"]
        attrs["project_id"] = attrs["tenant_id"] = group["project_id"]
        self._require_remotes(ctx, group, attrs, txn)
        digest = rule_digest(attrs)
        key = rule_claim(group["id"], digest)
        if key in txn.claimed:
            raise duplicate_in_post()
        if not new_group:
            owner = self.repo.claim_owner(key)
            if owner is not None:
                raise conflict(
                    "SecurityGroupRuleExists",
                    f"Security group rule already exists. Rule id is {owner}.",
                )
        obj = self.new_object(attrs)
        obj["belongs_to_default_sg"] = bool(group.get("_default"))
        obj["_digest"] = digest
        # A lost race re-runs the whole operation, which then reports the winner's id.
        txn.claim(key, obj["id"], None)
        txn.create(self.defn.kind, obj, group["id"])
        return obj

    def _require_remotes(
        self, ctx: RequestContext, group: dict[str, Any], attrs: dict[str, Any], txn: Txn
    ) -> None:
        remote = attrs.get("remote_group_id")
        if remote and remote != group["id"]:
            groups = self.state.resources["security_group"]
            txn.require(groups.load(ctx, remote))
        address_group = attrs.get("remote_address_group_id")
        if address_group:
            used = self.state.resources["address_group"].load(ctx, address_group)
            if not rbac.may_use(self.repo, ctx, used.obj, rbac.SHARED):  # being revoked
                raise not_found("address_group", address_group)
            txn.require(used)

    def update(
        self, ctx: RequestContext, id_: str, body: Any, if_match: int | None
    ) -> dict[str, Any]:
        """Rules are immutable in Neutron: every attribute is read-only."""
        validate_update(self.defn, ctx, body)
        self.load(ctx, id_)
        raise BadRequest("Security group rules cannot be updated: delete and create instead")

    def delete_ops(
        self, ctx: RequestContext, stored: Stored, txn: Txn, params: dict[str, str]
    ) -> None:
        rule = stored.obj
        digest = rule.get("_digest")
        if digest:
            txn.release(rule_claim(rule["security_group_id"], digest))
        txn.delete(self.defn.kind, stored)
        group = self.repo.get(SG_DEFN.kind, rule["security_group_id"])
        if group is not None and not group.obj.get("_deleting"):  # (not going with it)
            touch(group.obj)
            txn.update(group)


RESOURCES = [SecurityGroups, SecurityGroupRules]
