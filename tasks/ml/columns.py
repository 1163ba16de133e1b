"""The model's input contract, without pandas (the CLI's help prints it): the columns of a
flight's raw joined row, their types, which may be left out, and a request that works.
"""

from __future__ import annotations

import json
from typing import Any

WEATHER = [
    "temp",
    "dewp",
    "humid",
    "wind_dir",
    "wind_speed",
    "wind_gust",
    "precip",
    "pressure",
    "visib",
]
HISTORY = [
    "plane_legs_before", "plane_prev_dep_delay", "origin_known_flights",
    "origin_known_delay_rate", "origin_recent_delay_rate", "carrier_known_delay_rate",
]  # fmt: skip
# A flight's raw joined row: its schedule, the origin's weather at the scheduled hour, its
# plane, and its same-day history. Featurize stores these; `model_inputs` derives the
# features from them, for training and for the released model alike, which takes exactly
# these columns. Value: the column's type, and whether a row may leave it empty.
INPUT: dict[str, tuple[str, bool]] = {
    "year": ("long", False), "month": ("long", False), "day": ("long", False),
    "hour": ("long", False), "minute": ("long", False), "carrier": ("string", False),
    "flight": ("long", False), "origin": ("string", False), "dest": ("string", False),
    "tailnum": ("string", True), "distance": ("double", False),
    **{c: ("double", True) for c in WEATHER},
    "plane_year": ("double", True), "manufacturer": ("string", True),
    "seats": ("double", True), "engines": ("double", True),
    **{c: ("double", True) for c in HISTORY},
}  # fmt: skip

# A request that works as it is pasted (docs/cli.md, `plumber predict --help`): the required
# columns and some optional ones, the rest left out. tests/release/test_serving.py sends it.
EXAMPLE_COLUMNS = ["year", "month", "day", "hour", "minute", "carrier", "flight", "origin", "dest",
                   "distance", "tailnum", "temp", "wind_speed", "precip", "visib"]  # fmt: skip
EXAMPLE_ROW = [
    2013,
    6,
    15,
    17,
    30,
    "UA",
    1545,
    "EWR",
    "IAH",
    1400.0,
    "N14228",
    71.1,
    9.2,
    0.0,
    10.0,
]
EXAMPLE_BODY = json.dumps({"dataframe_split": {"columns": EXAMPLE_COLUMNS, "data": [EXAMPLE_ROW]}})


def example_curl(port: int = 5001) -> str:
    return (f"curl -s 127.0.0.1:{port}/invocations -H 'Content-Type: application/json' "
            f"-d '{EXAMPLE_BODY}'")  # fmt: skip


def described() -> list[dict[str, Any]]:
    """Each column, its type, and whether a row may leave it out."""
    return [{"name": name, "type": kind, "required": not optional}
            for name, (kind, optional) in INPUT.items()]  # fmt: skip


def table() -> str:
    """The input columns for people: name, type, required or optional."""
    return "\n".join(
        f"  {c['name']:<26}{c['type']:<8}{'required' if c['required'] else 'optional'}"
        for c in described()
    )
