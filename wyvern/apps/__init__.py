"""Pure apps: local view in, flows out (see wyvern.apps.base for the contract).

`ALL_APPS` lists every app class the agent runs, each instantiated without arguments.
Add yours to the list (keep it a plain list).
"""

from __future__ import annotations

from wyvern.apps.base import App
from wyvern.apps.classifier import Classifier
from wyvern.apps.defaults import PipelineDefaults
from wyvern.apps.l2 import L2
from wyvern.apps.l3 import L3App
from wyvern.apps.metadata import MetadataApp
from wyvern.apps.metering import MeteringApp
from wyvern.apps.nat import NatApp
from wyvern.apps.output import OutputApp
from wyvern.apps.port_security import PortSecurity
from wyvern.apps.qos import QosApp
from wyvern.apps.security_groups import SecurityGroups
from wyvern.apps.services import Services
from wyvern.apps.trunk import TrunkApp

# The L2 family: every stage but the security-group, L3 and NAT ones.
L2_APPS: list[type[App]] = [
    PipelineDefaults,
    Classifier,
    PortSecurity,
    Services,
    L2,
    OutputApp,
    MetadataApp,
    QosApp,
    TrunkApp,
]

ALL_APPS: list[type[App]] = [
    *L2_APPS,
    SecurityGroups,
    L3App,
    NatApp,
    MeteringApp,
]

__all__ = ["ALL_APPS", "L2_APPS", "App"]
