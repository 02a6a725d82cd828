"""Activities: everything that does I/O (model calls, database, Redis) lives here."""
