"""Wyvern: a distributed SDN controller with a Neutron-compatible northbound API."""

__version__ = "0.1.0"
