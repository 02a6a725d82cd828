"""The Convergio database: schema migrations and connection pool."""
