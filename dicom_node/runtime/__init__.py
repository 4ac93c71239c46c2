"""Running the stages: ``serve``."""
