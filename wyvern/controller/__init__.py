"""Local controller (one per chassis): sync, local view, incremental engine.

Arrives with the agent issue.
"""
