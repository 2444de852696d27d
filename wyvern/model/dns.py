"""Neutron's internal DNS names (the `dns-integration` extension), shared by the API and the
agent's DHCP servers so both derive the same names.

- A port's `dns_name` is a host label or an FQDN (trailing dot); stored lower-case.
- `dns_assignment` has one entry per fixed IP: hostname and fqdn. With the operator's
  `dns_domain` setting left at Neutron's default (`openstacklocal`), Neutron ignores the
  port's dns_name there (the name is kept, but no domain makes it meaningful) and every
  address gets `host-<ip with dashes>`; so do we.
- An FQDN dns_name must end with the `dns_domain` setting (when it is not the default);
  a network's `dns_domain` is an FQDN.

What DHCP hands out (wyvern.controller.dhcp, dhcp6): the hostname of the address's
assignment (its first label), and as the domain the network's dns_domain when set, else
the `dns_domain` setting.
"""

from __future__ import annotations

import re

DEFAULT_DOMAIN = "openstacklocal"
FQDN_MAX_LEN = 255
_LABEL = re.compile(r"^[a-z0-9-]{1,63}$")
_NUMERIC = re.compile(r"^[0-9]+$")


def dotted(domain: str) -> str:
    """The domain as Neutron compares it: with a trailing dot ('' stays '')."""
    if not domain:
        return ""
    return domain if domain.endswith(".") else domain + "."


def is_default(domain: str) -> bool:
    return dotted(domain) == DEFAULT_DOMAIN + "."


def format_error(data: str, max_len: int = FQDN_MAX_LEN) -> str | None:
    """Why DATA is no valid PQDN or FQDN (RFC 1123 labels), None when it is; '' is valid."""
    if not data:
        return None
    trimmed = data[:-1] if data.endswith(".") else data
    reason = None
    labels = trimmed.split(".")
    if len(trimmed) > max_len:
        reason = f"'{trimmed}' exceeds the {max_len} character FQDN limit"
    else:
        for label in labels:
            if not label:
                reason = "Encountered an empty component"
            elif label.startswith("-") or label.endswith("-"):
                reason = f"Name '{label}' must not start or end with a hyphen"
            elif not _LABEL.match(label):
                reason = (
                    f"Name '{label}' must be 1-63 characters long, each of which can only "
                    "be alphanumeric or a hyphen"
                )
            if reason:
                break
        if reason is None and len(labels) > 1 and _NUMERIC.match(labels[-1]):
            reason = f"TLD '{labels[-1]}' must not be all numeric"
    if reason is None:
        return None
    return f"'{data}' not a valid PQDN or FQDN. Reason: {reason}"


def dns_name_error(data: str, config_domain: str) -> str | None:
    """Neutron's validate_dns_name (for a port's dns_name), against the setting."""
    error = format_error(data)
    if error or not data:
        return error
    domain = dotted(config_domain)
    if not domain or is_default(domain):
        return None  # (the name is not used: no length or domain check applies)
    higher = "." + domain
    if not data.endswith("."):
        if len(data) + len(higher) > FQDN_MAX_LEN:
            return (
                f"The dns_name passed is a PQDN and its size is '{len(data)}'. The dns_domain "
                f"option in neutron.conf is set to {domain}, with a length of "
                f"'{len(higher)}'. When the two are concatenated to form a FQDN (with a '.' "
                f"at the end), the resulting length exceeds the maximum size of "
                f"'{FQDN_MAX_LEN}'"
            )
        return None
    if len(data) <= len(higher) or not data.endswith(higher):
        return (
            "The dns_name passed is a FQDN. Its higher level labels must be equal to the "
            f"dns_domain option in neutron.conf, that has been set to '{domain}'. It must "
            f"also include one or more valid DNS labels to the left of '{domain}'"
        )
    return None


def dns_domain_error(data: str) -> str | None:
    """Neutron's validate_dns_domain: a valid FQDN with its trailing dot; '' is valid."""
    if not data:
        return None
    error = format_error(data)
    if error:
        return error
    if not data.endswith("."):
        return f"'{data}' is not a FQDN"
    return None


def fip_dns_name_error(data: str) -> str | None:
    """Neutron's validate_fip_dns_name: a relative name that an FQDN can be made of."""
    if not data:
        return None
    if data.endswith("."):
        return f"'{data}' is a FQDN. It should be a relative domain name"
    error = format_error(data)
    if error:
        return error
    if len(data) > FQDN_MAX_LEN - 3:
        return (
            f"'{data}' contains {len(data)} characters. Adding a domain name will cause it "
            f"to exceed the maximum length of a FQDN of '{FQDN_MAX_LEN}'"
        )
    return None


def request_dns_name(dns_name: str, config_domain: str) -> str:
    """The dns_name Neutron uses: none while the setting is empty or the default."""
    domain = dotted(config_domain)
    return dns_name if domain and not is_default(domain) else ""


def assignment(dns_name: str, ip: str, config_domain: str) -> tuple[str, str]:
    """(hostname, fqdn) of IP on a port named DNS_NAME, as Neutron's dns_assignment."""
    domain = dotted(config_domain)
    name = request_dns_name(dns_name, config_domain)
    if name:
        return name, name if name.endswith(".") else f"{name}.{domain}"
    hostname = "host-" + ip.replace(".", "-").replace(":", "-")
    return hostname, f"{hostname}.{domain}" if domain else hostname


def dns_assignment(dns_name: str, ips: list[str], config_domain: str) -> list[dict[str, str]]:
    out = []
    for ip in ips:
        hostname, fqdn = assignment(dns_name, ip, config_domain)
        out.append({"ip_address": ip, "hostname": hostname, "fqdn": fqdn})
    return out


def dhcp_hostname(dns_name: str, ip: str, config_domain: str) -> str:
    """The host name DHCP gives (option 12): the assignment's first label."""
    return assignment(dns_name, ip, config_domain)[0].split(".", 1)[0]


def dhcp_domain(network_domain: str, config_domain: str) -> str:
    """The domain DHCP gives (v4 option 15, v6 domain search): the network's dns_domain,
    else the setting; without the trailing dot, as dnsmasq sends it."""
    return (network_domain or config_domain).rstrip(".")
