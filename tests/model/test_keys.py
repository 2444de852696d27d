"""The key layout is one contract: every key the API or an agent writes decodes to what it
holds, and no other module spells a key prefix."""

from __future__ import annotations

import ast
from pathlib import Path

from wyvern.model import keys

WYVERN = Path(__file__).resolve().parents[2] / "wyvern"


def test_object_and_status_keys_decode_to_what_they_hold() -> None:
    d = keys.decode_key(keys.obj_key("networks", "n1"))
    assert d is not None and (d.kind, d.id) == ("network", "n1")
    d = keys.decode_key(keys.obj_key("ports", "p1", "n1"))
    assert d is not None and (d.kind, d.id) == ("port", "p1")
    d = keys.decode_key(keys.obj_key("security_group_rules", "r1", "sg"))
    assert d is not None and (d.kind, d.id) == ("security_group_rule", "r1")
    d = keys.decode_key(keys.chassis_key("hv1"))
    assert d is not None and (d.kind, d.id) == ("chassis", "hv1")
    d = keys.decode_key(keys.status_key("n1", "p1"))
    assert d is not None and (d.kind, d.id) == ("status", "p1")
    assert keys.status_port(keys.status_key("n1", "p1")) == "p1"
    d = keys.decode_key(keys.gateway_status_key("r1"))
    assert d is not None and (d.kind, d.id) == ("gateway_host", "r1")
    assert keys.gateway_prefixes("r1") == (keys.gateway_status_key("r1"),)
    assert keys.decode_key(keys.fip_status_key("f1")) is None  # (the API's, not the agents')
    rp = keys.router_port_status_key("p1", "c1")
    assert keys.decode_key(rp) is None and rp.startswith(keys.router_port_status_prefix("p1"))
    assert keys.requested_port(keys.host_port_key("hv/1", "p1")) == "p1"
    assert keys.host_port_key("hv/1", "p1").startswith(keys.host_ports_prefix("hv/1"))


def test_keys_no_agent_follows_decode_to_nothing() -> None:
    assert keys.decode_key("/wyvern/status/ports/p1") is None  # (an older status layout)
    for ignored in (
        keys.uniq_key("mac", "n1", "fa:16:3e:00:00:01"),
        keys.index_key("ports", "p1"),
        keys.owner_key("proj", "ports", "p1"),
        keys.quota_key("proj"),
        keys.registry_key("hv1"),
        keys.host_port_key("hv1", "p1"),
        "/other/networks/n1",
    ):
        assert keys.decode_key(ignored) is None, ignored
        assert keys.status_port(ignored) is None, ignored


def test_a_network_is_followed_by_its_own_prefixes_only() -> None:
    net, other = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
    mine = [
        keys.obj_key("networks", net),
        keys.obj_key("subnets", "s1", net),
        keys.obj_key("ports", "p1", net),
        keys.status_key(net, "p1"),
    ]
    theirs = [keys.obj_key("networks", other), keys.obj_key("ports", "p2", other)]
    prefixes = keys.network_prefixes(net)
    assert all(any(k.startswith(p) for p in prefixes) for k in mine)
    assert not any(k.startswith(p) for p in prefixes for k in theirs)


def _string_constants(tree: ast.AST) -> list[str]:
    """Every str constant that is not a docstring (f-string parts included)."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_no_module_but_the_model_spells_a_key_prefix() -> None:
    offenders = []
    for path in sorted(WYVERN.rglob("*.py")):
        if path == WYVERN / "model" / "keys.py":
            continue
        for text in _string_constants(ast.parse(path.read_text())):
            if "/wyvern/" in text or "status/ports" in text or "index/host_ports" in text:
                offenders.append(f"{path.relative_to(WYVERN)}: {text!r}")
    assert offenders == []


def test_the_probe_finds_a_spelled_prefix() -> None:
    """(the check above can fail: it sees a literal prefix in code, not in docstrings)"""
    tree = ast.parse('"""/wyvern/ in a docstring"""\nKEY = f"/wyvern/ports/{1}"\n')
    assert _string_constants(tree) == ["/wyvern/ports/"]
