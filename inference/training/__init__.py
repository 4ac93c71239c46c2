"""Training and export of the reference models (needs torch; never imported by the node)."""
