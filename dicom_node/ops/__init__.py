"""The operator's use-cases, shared by the CLI, the API and the dashboard: each takes a
session and returns plain, JSON-ready rows or an outcome, so no front end queries the
ORM."""
