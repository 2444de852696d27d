"""Policy enforcement as neutron-server does it: oslo.policy over Neutron's default rules.

The one entry point is `Policy`: `check` (a yes/no, e.g. for visibility), `enforce` (the
request's action and the attributes its body sets, or 403 PolicyNotAuthorized) and
`strip` (the attributes a caller may not read, dropped from a response). Targets are the
objects themselves, plus the keys Neutron's rules read from their parents
(`network:project_id`, `security_group:project_id`, `ext_parent:project_id`), which each
resource adds (`Resource.policy_target`).

Defaults: wyvern.api.policies, with oslo.policy's `enforce_new_defaults` and
`enforce_scope` on, as Neutron's current defaults. An operator's `policy_file` overrides
them rule by rule and is reread when it changes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from oslo_config import cfg
from oslo_policy import _checks
from oslo_policy import opts as policy_opts
from oslo_policy import policy as oslo_policy

from wyvern.api.context import RequestContext
from wyvern.api.errors import PolicyNotAuthorized
from wyvern.api.policies import RULES

RELOAD_EVERY = 1.0  # seconds between looks at the policy_file
MEMO_SIZE = 50_000


@oslo_policy.register("field")
class FieldCheck(oslo_policy.Check):
    """`field:<resource>:<attribute>=<value>`, Neutron's check of a target's attribute
    (`~` before the value: a regular expression), e.g. `field:networks:shared=True`."""

    def __init__(self, kind: str, match: str) -> None:
        super().__init__(kind, match)
        _resource, field_value = match.split(":", 1)
        self.field, value = field_value.split("=", 1)
        self.regex = re.compile(value[1:]) if value.startswith("~") else None
        self.value = value

    def __call__(
        self,
        target: Mapping[str, Any],
        creds: MutableMapping[str, Any],
        enforcer: oslo_policy.Enforcer,
        current_rule: str | None = None,
    ) -> bool:
        got = target.get(self.field)
        if got is None:
            return False
        if self.regex is not None:
            return bool(self.regex.match(str(got)))
        if isinstance(got, bool):
            return str(got).lower() == self.value.lower()
        return str(got) == self.value


def _defaults() -> list[oslo_policy.RuleDefault]:
    out = []
    for rules in RULES.values():
        for name, check in rules:
            # Named building blocks have no scope; actions are project-scoped, as Neutron's.
            scope = ["project"] if _is_action(name) else None
            out.append(oslo_policy.RuleDefault(name, check, scope_types=scope))
    return out


def _is_action(name: str) -> bool:
    return name.split("_", 1)[0] in ("create", "get", "update", "delete") or ":" in name


class Policy:
    def __init__(self, policy_file: Path | None = None) -> None:
        if policy_file is not None and not policy_file.is_file():
            raise ValueError(f"policy_file {policy_file} does not exist")
        conf = cfg.ConfigOpts()
        conf([], project="wyvern", default_config_files=[], default_config_dirs=[])
        policy_opts.set_defaults(conf, enforce_scope=True, enforce_new_defaults=True)
        self.enforcer = oslo_policy.Enforcer(
            conf,
            policy_file=str(policy_file) if policy_file is not None else "wyvern-none.yaml",
        )
        self.enforcer.register_defaults(_defaults())
        self.enforcer.load_rules()
        self._rules = self.enforcer.rules
        self._next_reload = time.monotonic() + RELOAD_EVERY
        # oslo.policy costs ~0.2 ms a check (it rereads its config and inspects each
        # check's signature): decisions are memoized on what a rule reads (the caller's
        # creds, and the target keys its checks name), until the rules change.
        self._memo: dict[tuple[Any, ...], bool] = {}
        self._reads: dict[str, tuple[str, ...] | None] = {}
        self._attr_rules: dict[str, list[tuple[str, str]]] = {}

    def _fresh(self) -> None:
        now = time.monotonic()
        if now < self._next_reload:
            return
        self._next_reload = now + RELOAD_EVERY
        self.enforcer.load_rules()
        if self.enforcer.rules is not self._rules:
            self._rules = self.enforcer.rules
            self._memo.clear()
            self._reads.clear()
            self._attr_rules.clear()

    def has_rule(self, name: str) -> bool:
        self._fresh()
        return name in self._rules

    def check(self, ctx: RequestContext, rule: str, target: dict[str, Any]) -> bool:
        """Whether `rule` allows the caller on `target` (an unknown rule: the `default`)."""
        self._fresh()
        if rule not in self._reads:
            self._reads[rule] = _target_keys(self._rules, rule)
        keys = self._reads[rule]
        memo_key: tuple[Any, ...] | None = None
        if keys is not None:
            try:
                memo_key = (rule, _creds_key(ctx), *(_hashable(target.get(k)) for k in keys))
                hit = self._memo.get(memo_key)
            except TypeError:
                memo_key = hit = None
            if hit is not None:
                return hit
        try:
            allowed = bool(self.enforcer.enforce(rule, target, _creds(ctx)))
        except oslo_policy.InvalidScope:
            allowed = False
        if memo_key is not None:
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            self._memo[memo_key] = allowed
        return allowed

    def enforce(
        self,
        ctx: RequestContext,
        action: str,
        target: dict[str, Any],
        attrs: Iterable[tuple[str, Any]] = (),
    ) -> None:
        """The action, then each attribute the request sets (`action:attr`, and for a dict
        or a list of dicts `action:attr:key` per key), where such a rule exists: the first
        refusal is the 403, naming its rule as Neutron does."""
        for rule in [action, *attr_rules(action, attrs)]:
            if (rule == action or self.has_rule(rule)) and not self.check(ctx, rule, target):
                raise PolicyNotAuthorized(rule)

    def strip(
        self, ctx: RequestContext, resource: str, target: dict[str, Any], out: dict[str, Any]
    ) -> dict[str, Any]:
        """Drop from a response the attributes whose `get_<resource>:<attr>` rule refuses
        the caller (Neutron's _exclude_attributes_by_policy)."""
        self._fresh()
        rules = self._attr_rules.get(resource)
        if rules is None:
            prefix = f"get_{resource}:"
            rules = [(r[len(prefix) :], r) for r in self._rules if r.startswith(prefix)]
            self._attr_rules[resource] = rules
        for name, rule in rules:
            if name in out and not self.check(ctx, rule, target):
                del out[name]
        return out


def attr_rules(action: str, attrs: Iterable[tuple[str, Any]]) -> list[str]:
    out: list[str] = []
    for name, value in attrs:
        out.append(f"{action}:{name}")
        if isinstance(value, dict):
            keys: Iterable[str] = value
        elif isinstance(value, list) and all(isinstance(v, dict) for v in value):
            keys = dict.fromkeys(k for v in value for k in v)
        else:
            continue
        out.extend(f"{action}:{name}:{k}" for k in keys)
    return out


def _creds(ctx: RequestContext) -> dict[str, Any]:
    return {
        "user_id": ctx.user_id,
        "project_id": ctx.project_id,
        "tenant_id": ctx.project_id,
        "roles": sorted(ctx.roles),
        "service_roles": sorted(ctx.service_roles),
        "is_admin_project": ctx.is_admin_project,
    }


def _creds_key(ctx: RequestContext) -> tuple[Any, ...]:
    return (ctx.project_id, ctx.user_id, ctx.roles, ctx.service_roles, ctx.is_admin_project)


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


_SUBST = re.compile(r"%\((.+?)\)s")


def _target_keys(rules: Any, name: str) -> tuple[str, ...] | None:
    """The target keys a rule's checks read (None: a check we cannot see into)."""
    keys: set[str] = set()
    seen: set[str] = set()

    def walk(check: Any) -> bool:
        if isinstance(check, _checks.AndCheck | _checks.OrCheck):
            return all(walk(c) for c in check.rules)
        if isinstance(check, _checks.NotCheck):
            return walk(check.rule)
        if isinstance(check, _checks.RuleCheck):
            if check.match in seen:
                return True
            seen.add(check.match)
            return walk(rules[check.match])
        if isinstance(check, FieldCheck):
            keys.add(check.field)
            return True
        if isinstance(check, _checks.RoleCheck | _checks.TrueCheck | _checks.FalseCheck):
            return True
        if type(check) is _checks.GenericCheck:
            keys.update(_SUBST.findall(check.match))
            return True
        return False

    return tuple(sorted(keys)) if walk(rules[name]) else None
