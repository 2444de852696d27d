"""Neutron v2.0 compatible REST API."""
