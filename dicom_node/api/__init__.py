"""The HTTP side of the node: REST API, dashboard and /metrics (the ``api`` stage)."""
