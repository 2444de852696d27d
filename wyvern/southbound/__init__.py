"""Southbound: the pipeline IR and its backends.

Pure, no I/O: `pipeline` (every stage by name; table numbers derived), `registers` (the
register map), `cookies` (app + object in every cookie), `ir` (matches, actions, flows,
checked per stage), `render` (ovs-ofctl text), `simulator` and `packet` (the reference
simulator). The OVS-facing modules of this package do the I/O.
"""
