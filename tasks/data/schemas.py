"""What a valid row of each source looks like: types, nulls, ranges, codes, keys.

A schema is a set of typed fields plus checks. Raw values are parsed to the field's
type first (CSV arrives as text), then checked with pandera. Codes are checked against
the reference sources themselves (airports, airlines), so a schema that needs them
names them in ``needs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import pandera.pandas as pa

Kind = Literal["int", "float", "str", "timestamp"]

PANDAS_DTYPES: dict[str, str] = {
    "int": "Int64",
    "float": "Float64",
    "str": "string",
    "timestamp": "datetime64[us, UTC]",
}


@dataclass(frozen=True)
class Field:
    kind: Kind
    nullable: bool = False
    checks: tuple[pa.Check, ...] = ()


@dataclass(frozen=True)
class References:
    """Codes known from the reference sources."""

    airports: frozenset[str] = frozenset()
    carriers: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Schema:
    fields: dict[str, Field]
    needs: tuple[str, ...] = ()  # reference sources validated before this one
    recorded_at: str | None = None  # when the row was recorded: not in the future
    happened_at: str | None = None  # the event's time: not after recorded_at
    extra: dict[str, str] = field(default_factory=dict)


def in_range(lo: float, hi: float) -> pa.Check:
    return pa.Check.in_range(lo, hi, error=f"out of range [{lo:g}, {hi:g}]")


def flights(refs: References) -> Schema:
    airport = pa.Check.isin(sorted(refs.airports), error="unknown airport code")
    return Schema(
        needs=("airports", "airlines"),
        recorded_at="updated_at",
        happened_at="time_hour",
        fields={
            "year": Field("int", checks=(in_range(1990, 2100),)),
            "month": Field("int", checks=(in_range(1, 12),)),
            "day": Field("int", checks=(in_range(1, 31),)),
            "dep_time": Field("float", nullable=True, checks=(in_range(0, 2400),)),
            "sched_dep_time": Field("int", checks=(in_range(0, 2359),)),
            "dep_delay": Field("float", nullable=True, checks=(in_range(-240, 2880),)),
            "arr_time": Field("float", nullable=True, checks=(in_range(0, 2400),)),
            "sched_arr_time": Field("int", checks=(in_range(0, 2400),)),
            "arr_delay": Field("float", nullable=True, checks=(in_range(-240, 2880),)),
            "carrier": Field(
                "str", checks=(pa.Check.isin(sorted(refs.carriers), error="unknown carrier"),)
            ),
            "flight": Field("int", checks=(in_range(1, 99999),)),
            "tailnum": Field("str", nullable=True),
            "origin": Field("str", checks=(airport,)),
            "dest": Field("str", checks=(airport,)),
            "air_time": Field("float", nullable=True, checks=(in_range(0, 1440),)),
            "distance": Field("float", checks=(in_range(1, 10000),)),
            "hour": Field("int", checks=(in_range(0, 23),)),
            "minute": Field("int", checks=(in_range(0, 59),)),
            "time_hour": Field("timestamp"),
            "updated_at": Field("timestamp"),
        },
    )


def weather(refs: References) -> Schema:
    return Schema(
        needs=("airports",),
        recorded_at="updated_at",
        happened_at="time_hour",
        fields={
            "origin": Field(
                "str", checks=(pa.Check.isin(sorted(refs.airports), error="unknown airport code"),)
            ),
            "year": Field("int", checks=(in_range(1990, 2100),)),
            "month": Field("int", checks=(in_range(1, 12),)),
            "day": Field("int", checks=(in_range(1, 31),)),
            "hour": Field("int", checks=(in_range(0, 23),)),
            "temp": Field("float", nullable=True, checks=(in_range(-80, 140),)),
            "dewp": Field("float", nullable=True, checks=(in_range(-80, 100),)),
            "humid": Field("float", nullable=True, checks=(in_range(0, 100),)),
            "wind_dir": Field("float", nullable=True, checks=(in_range(0, 360),)),
            "wind_speed": Field("float", nullable=True, checks=(in_range(0, 250),)),
            "wind_gust": Field("float", nullable=True, checks=(in_range(0, 300),)),
            "precip": Field("float", nullable=True, checks=(in_range(0, 10),)),
            "pressure": Field("float", nullable=True, checks=(in_range(850, 1100),)),
            "visib": Field("float", nullable=True, checks=(in_range(0, 100),)),
            "time_hour": Field("timestamp"),
            "updated_at": Field("timestamp"),
        },
    )


def planes(refs: References) -> Schema:
    return Schema(
        fields={
            "tailnum": Field(
                "str", checks=(pa.Check.str_matches(r"^N\w+$", error="not a US tail number"),)
            ),
            "year": Field("int", nullable=True, checks=(in_range(1900, 2100),)),
            "type": Field("str", nullable=True),
            "manufacturer": Field("str", nullable=True),
            "model": Field("str", nullable=True),
            "engines": Field("int", nullable=True, checks=(in_range(0, 10),)),
            "seats": Field("int", nullable=True, checks=(in_range(1, 1000),)),
            "speed": Field("float", nullable=True, checks=(in_range(0, 1000),)),
            "engine": Field("str", nullable=True),
        },
    )


def airports(refs: References) -> Schema:
    return Schema(
        fields={
            "faa": Field(
                "str", checks=(pa.Check.str_matches(r"^[A-Z0-9]{3,4}$", error="not an FAA code"),)
            ),
            "name": Field("str"),
            "lat": Field("float", checks=(in_range(-90, 90),)),
            "lon": Field("float", checks=(in_range(-180, 180),)),
            "alt": Field("float", nullable=True, checks=(in_range(-1500, 30000),)),
            "tz": Field("float", nullable=True, checks=(in_range(-12, 14),)),
            "dst": Field("str", nullable=True),
            "tzone": Field("str", nullable=True),
        },
    )


def airlines(refs: References) -> Schema:
    return Schema(fields={"carrier": Field("str"), "name": Field("str")})


SCHEMAS = {
    "flights": flights,
    "weather": weather,
    "planes": planes,
    "airports": airports,
    "airlines": airlines,
}


def schema_for(schema_name: str, watermark: str | None, refs: References) -> Schema:
    """The named schema as a source with this watermark column has it (the source's own
    setting, not the demo's `updated_at`): see `with_watermark`."""
    return with_watermark(SCHEMAS[schema_name](refs), watermark)


def with_watermark(schema: Schema, watermark: str | None) -> Schema:
    """The schema whose record time is the source's watermark column.

    A schema names when a row was recorded (`recorded_at`: not in the future, not before
    the event). A source whose watermark is another timestamp column of the schema (a
    flights table whose watermark is `time_hour`) records no `updated_at`: the watermark
    column is then the record time. A watermark the schema does not know (a number, a
    column of the user's own) leaves no record time to check.
    """
    if schema.recorded_at is None or watermark == schema.recorded_at:
        return schema
    fields = {name: f for name, f in schema.fields.items() if name != schema.recorded_at}
    known = watermark is not None and watermark in fields and fields[watermark].kind == "timestamp"
    if not known:
        return replace(schema, fields=fields, recorded_at=None, happened_at=None)
    happened = None if watermark == schema.happened_at else schema.happened_at
    return replace(schema, fields=fields, recorded_at=watermark, happened_at=happened)


def to_pandera(schema: Schema) -> pa.DataFrameSchema:
    """The schema's types, nulls and checks. Keys are checked apart, across partitions
    (tasks/data/keys.py): pandera sees one batch of rows at a time."""
    columns = {
        name: pa.Column(PANDAS_DTYPES[f.kind], checks=list(f.checks), nullable=f.nullable)
        for name, f in schema.fields.items()
    }
    return pa.DataFrameSchema(columns, strict=False)
