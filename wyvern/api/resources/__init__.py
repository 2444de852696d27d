"""Every resource controller the API serves, in discovery order."""

from __future__ import annotations

from wyvern.api.resource import Resource
from wyvern.api.resources import (
    address_groups,
    address_scopes,
    agents,
    floatingips,
    metering,
    networks,
    port_forwardings,
    ports,
    qos,
    quotas,
    rbac_policies,
    routers,
    security_groups,
    service_providers,
    subnetpools,
    subnets,
    trunks,
)

RESOURCE_CLASSES: list[type[Resource]] = [
    *networks.RESOURCES,
    *address_scopes.RESOURCES,
    *subnetpools.RESOURCES,
    *subnets.RESOURCES,
    *ports.RESOURCES,
    *security_groups.RESOURCES,
    *address_groups.RESOURCES,
    *routers.RESOURCES,
    *floatingips.RESOURCES,
    *port_forwardings.RESOURCES,
    *metering.RESOURCES,
    *qos.RESOURCES,
    *rbac_policies.RESOURCES,
    *quotas.RESOURCES,
    *agents.RESOURCES,
    *service_providers.RESOURCES,
    *trunks.RESOURCES,
]
