"""Stage 3, infer and label: a job's inputs → volumes → model → synthetic series
in the spool (the maths stays in ``inference``)."""
