"""Storage: typed ORM models, engine and sessions, queries, migrations."""
