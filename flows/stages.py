"""The pipeline's stages as DVC knows them: their order, and running one of them.

The stage list lives in dvc.yaml alone; this module asks DVC for it, so the flow and
`dvc repro` can never disagree about what runs or in which order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StageResult:
    stage: str
    ran: bool  # False: DVC found nothing changed and skipped it
    seconds: float


class StageFailed(Exception):
    """A stage of the flow failed; names it, so reports and notifications can."""

    def __init__(self, stage: str, error: BaseException | str) -> None:
        from tasks.cli_support import Busy

        self.stage, self.error = stage, str(error)
        self.busy = isinstance(error, Busy)  # waited too long for another process
        super().__init__(f"stage {stage} failed: {error}")


def stage_order(root: Path) -> list[str]:
    """Every stage of dvc.yaml, dependencies first, as `dvc repro` would run them."""
    from dvc.repo import Repo
    from dvc.repo.reproduce import get_active_graph, plan_repro

    with Repo(str(root)) as repo:
        return [stage.addressing for stage in plan_repro(get_active_graph(repo.index.graph))]


def reproduce_stage(
    root: Path, name: str, flow_run_id: str | None = None, lock_timeout: float = 600
) -> StageResult:
    """Run one stage if DVC considers it changed; dvc.lock records it either way.

    The stage's process sees the flow run's id, so its MLflow run can name it. A DVC
    command holding the repository is waited for, up to `lock_timeout` seconds.
    """
    import os

    from dvc.repo import Repo

    from flows.locks import wait_for_dvc
    from tasks.tracking import FLOW_RUN_ENV

    wait_for_dvc(root, lock_timeout)
    if flow_run_id:
        os.environ[FLOW_RUN_ENV] = flow_run_id
    start = time.perf_counter()
    with Repo(str(root)) as repo:
        ran = repo.reproduce(name, single_item=True)
    return StageResult(stage=name, ran=bool(ran), seconds=round(time.perf_counter() - start, 3))
