"""Northbound store: versioned keys, atomic transactions, ordered watches."""
