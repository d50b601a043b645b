"""Alembic migrations for the mailticket schema."""
