"""The weekly check that every released model can still be rebuilt bit for bit from its
record: `plumber reproduce --all-released` as a Prefect flow (prefect.yaml deploys it as
`plumber-reproduce-weekly`). It fails, naming the versions, when any record is incomplete
or any rebuild differs, so a lost remote object or a drifted dependency shows up in days,
not when an auditor asks."""

from __future__ import annotations

import logging
from typing import Any

from prefect import flow

from tasks.core import secrets
from tasks.core.config import load_params
from tasks.core.errors import StepError
from tasks.core.paths import Paths


@flow(name="plumber-reproduce", validate_parameters=True)
def reproduce_released(root: str = ".", offline: bool = False) -> list[dict[str, Any]]:
    """Rebuild every released version in a temporary workspace and compare."""
    from tasks.ops import reproduce

    secrets.install()
    paths = Paths.at(root)
    reports, code = reproduce.run(
        paths, load_params(paths.params), None, reproduce.Options(offline=offline)
    )
    log = logging.getLogger(__name__)
    for report in reports:
        log.info("%s", report["text"])
    failed = [r for r in reports if r.get("incomplete") or not r.get("identical")]
    if code:
        names = ", ".join(f"version {r['version']}" for r in failed)
        raise StepError(f"{len(failed)} of {len(reports)} released version(s) not rebuilt "
                        f"identically: {names}")  # fmt: skip
    return reports
