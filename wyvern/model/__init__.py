"""The contract between the API and the agents: the store's key layout (`keys`) and the
typed records an agent's view holds (`view`). Both sides import it; it imports neither."""
