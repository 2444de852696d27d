"""The status a port shows, from its agent's status record (`/wyvern/status/ports/`).

Shared by the API (which merges the record into the port) and the Nova notifier (which
tells Nova when it changes), so both say the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def reported_status(port: Mapping[str, Any], record: Mapping[str, Any] | None) -> str | None:
    """The status the agent's RECORD gives PORT (None: no record, or no status in it).
    ACTIVE counts only from the host the port is bound to: after a rebinding
    (`binding:host_id` changed) the old host's record says nothing about the new one, so
    the port is DOWN until that host's agent reports it, as ML2 resets it to DOWN."""
    if not record or not record.get("status"):
        return None
    status = str(record["status"])
    host = str(port.get("binding:host_id") or "")
    reported = {str(record.get("host") or ""), str(record.get("chassis") or "")}
    if status == "ACTIVE" and host and host not in reported:
        return "DOWN"
    return status
