"""Stage 2, assemble and route: stability, roles, decisions, the scheduler that turns
stable studies into jobs, and ``roles explain``."""
