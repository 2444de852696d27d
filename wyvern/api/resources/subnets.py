"""Placeholder: filled in by its own change."""

from __future__ import annotations

from wyvern.api.resource import Resource

RESOURCES: list[type[Resource]] = []
