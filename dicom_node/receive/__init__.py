"""Stage 1, receive: the listening AE (C-ECHO, C-STORE → spool file + instance row)
and its start-up chore, reconciling the spool with the index."""
