"""Durable state: the database (SQLAlchemy) and the spool of received and produced files."""
