"""An independent head simulator used only to test the translation models.

Written without reading the training simulator (``inference/training/simulate.py``,
``tissues.py``, ``template.py``): its anatomy construction, tissue table, sequences and
signal equations are its own, so a model's score on these cases says how it handles heads
and protocols it was not trained on. The brain itself comes from nilearn's MNI152 2009
maps, which the training simulator may use too. Never train on these cases or select
models with them.
"""

from inference.training.testbench.case import Case, Scan, simulate_case

__all__ = ["Case", "Scan", "simulate_case"]
