"""Pure apps: local view in, flows out. Arrive with the agent issue."""
