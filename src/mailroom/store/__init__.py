"""The durable outbox: schema, migrations and the queries the engine needs."""
