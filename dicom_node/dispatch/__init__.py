"""Stage 4, dispatch: the outbox, and sending each delivery to its destination."""
