"""Southbound IR and OpenFlow backend. Arrives with the agent issue."""
