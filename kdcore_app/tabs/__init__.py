"""One module per tab; each ``build(state)`` creates its widgets, wires its callbacks and returns what the other
tabs need (model lists to refresh, widgets another tab sets)."""
