"""Coded concepts the node writes and recognises, from the DCMR (PS3.16)."""

SYNTHESIZING_EQUIPMENT = ("109100", "DCM")
"""(109100, DCM, "Synthesizing Equipment"): a Contributing Equipment item's Purpose of
Reference (CID 7005) when that equipment synthesized the image."""
