"""Query/Retrieve of what the node holds: C-FIND, C-GET and C-MOVE."""
