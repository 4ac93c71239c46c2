"""An independent head simulator used only to test the translation models.

Written apart from the training simulator (it shares no code, anatomy, tissue values or
signal equations with it) so that a model's score on these cases says how it handles heads
and protocols it has not seen. Never train on it or select models with it.
"""

from inference.training.testbench.case import Case, Scan, simulate_case

__all__ = ["Case", "Scan", "simulate_case"]
