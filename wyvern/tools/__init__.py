"""Offline tools that read the store and the switch but are no part of the agent."""
