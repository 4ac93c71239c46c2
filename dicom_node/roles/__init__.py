"""The series role rule language shared by the configuration and the route stage:
rules, attribute lookup, recognition, and the default rules."""
