"""The pipeline's stages as DVC knows them: their order, and running one of them.

The stage list lives in dvc.yaml alone; this module asks DVC for it, so the flow and
`dvc repro` can never disagree about what runs or in which order.

A stage that changed runs as `dvc repro --single-item NAME` in its own process group
(flows/process.py), so its output can be read line by line into the flow's logs, the
error line it ends with can name the failure, and a stage past its time limit can be
stopped with everything it started. DVC decides what changed and records it in
dvc.lock, exactly as `dvc repro` does.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flows.process import last_error, run_captured
from tasks.core import progress
from tasks.core.dvc_internals import lock_race, stage_changed
from tasks.core.entry import LOG_FORMAT_ENV
from tasks.core.errors import Busy, DiskFull, StepError
from tasks.core.progress import Bars
from tasks.core.secrets import mask

log = logging.getLogger(__name__)

RAN, UNCHANGED, SKIPPED = "ran", "unchanged", "skipped"

# The stages log "LEVEL logger: message" (LOG_FORMAT_ENV); the flow re-logs each line at
# its level, so a stage's warnings stay warnings in Prefect's run logs.
CHILD_LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
_CHILD_RECORD = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) ([\w.]+): (.*)$")
# A step's closing line when it fails (tasks/core/errors.py: `kind: message`), and DVC's
# own: logged as errors, not as the stage's ordinary output.
_ERROR_LINE = re.compile(r"^(error|busy|disk full|cancelled|ERROR): ")
# DVC's own chatter around a stage: kept at debug level.
_DVC_CHATTER = (
    "Running stage",
    "> ",
    "Updating lock file",
    "To track the changes with git",
    "git add ",
    "To enable auto staging",
    "dvc config core.autostage",
    "Use `dvc push` to send",
)


@dataclass(frozen=True)
class StageResult:
    stage: str
    outcome: str  # RAN, UNCHANGED (DVC found nothing changed) or SKIPPED (retrain policy)
    seconds: float
    note: str = ""

    @property
    def ran(self) -> bool:
        return self.outcome == RAN


class StageCancelled(StepError):
    """The flow run was cancelled (Prefect UI or API) while the stage ran: it was stopped."""

    kind = "cancelled"


class StageFailed(StepError):
    """A stage of the flow failed; names it, so reports and notifications can. Ends the
    command as its cause would (busy: 75), else as a failure (1)."""

    def __init__(self, stage: str, error: BaseException | str) -> None:
        from tasks.core.secrets import mask

        self.stage, self.error = stage, mask(str(error))
        self.busy = isinstance(error, Busy)  # waited too long for another process
        self.cancelled = isinstance(error, StageCancelled)
        if self.busy:
            self.kind, self.exit_code = Busy.kind, Busy.exit_code
        super().__init__(f"stage {stage} failed: {error}")


class StageTimeout(StepError):
    """A stage ran past its limit (flow.stage_timeout_seconds) and was stopped."""


def reproduce_stage(
    root: Path,
    name: str,
    flow_run_id: str | None = None,
    lock_timeout: float = 600,
    timeout: float | None = None,
    force: bool = False,
) -> StageResult:
    """Run one stage if DVC considers it changed (or `force`); dvc.lock records it.

    DVC commands holding the repository are waited for, up to `lock_timeout` seconds.
    The stage's process sees the flow run's id, so its MLflow run can name it.
    """
    from flows.dvc_waits import wait_for_dvc
    from tasks.core.tracking import FLOW_RUN_ENV

    wait_for_dvc(root, lock_timeout)
    start = time.perf_counter()
    if not force and not stage_changed(root, name):
        return StageResult(name, UNCHANGED, round(time.perf_counter() - start, 3))
    # `python -m tasks.<step>` in dvc.yaml must find this interpreter, however the flow
    # was started (CLI, a schedule, a worker).
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, LOG_FORMAT_ENV: CHILD_LOG_FORMAT, "PATH": path}
    if flow_run_id:
        env[FLOW_RUN_ENV] = flow_run_id
    argv = [sys.executable, "-m", "dvc", "repro", "--single-item", *(["--force"] * force), name]
    deadline = time.monotonic() + lock_timeout
    watch = CancelWatch(flow_run_id) if flow_run_id else None
    try:
        while True:
            with _progress_bars(env) as bars:
                code, tail, timed_out = run_captured(
                    argv, root, env, timeout, _relay(name, bars), stop_when=watch
                )
            if code == 0 or not lock_race(tail) or time.monotonic() >= deadline:
                break
            # Another DVC command took a lock between our check and the stage's start.
            wait_for_dvc(root, max(0.0, deadline - time.monotonic()))
    finally:
        if watch is not None:
            watch.close()
    seconds = round(time.perf_counter() - start, 3)
    if watch is not None and watch.seen:
        raise StageCancelled(
            "the flow run was cancelled; the stage was stopped and its previous outputs kept"
        )
    if timed_out:
        raise StageTimeout(
            f"stopped after {timeout:g} s (flow.stage_timeout_seconds; "
            "the stage's previous outputs are kept)"
        )
    if code != 0:
        message = mask(last_error(tail, code))
        # DVC exits 1 whatever the stage's code: a busy stage is known by its `busy:` line.
        if any(line.startswith("busy: ") for line in tail) or lock_race(tail):
            raise Busy(message)
        if any(line.startswith(f"{DiskFull.kind}: ") for line in tail):
            raise DiskFull(message)
        raise StepError(message)
    return StageResult(name, RAN, seconds)


class CancelWatch:
    """Whether the flow run was asked to cancel (its state is Cancelling): a `plumber run`
    has no runner to stop it, so the stage it runs watches for it. `seen` tells afterwards."""

    def __init__(self, flow_run_id: str) -> None:
        self.flow_run_id, self.seen = flow_run_id, False
        self._client: Any = None

    def __call__(self) -> bool:
        from uuid import UUID

        from prefect.client.orchestration import get_client

        try:
            if self._client is None:
                self._client = get_client(sync_client=True)
                self._client.__enter__()
            state = self._client.read_flow_run(UUID(self.flow_run_id)).state
        except Exception:  # the API briefly away: keep running, ask again later
            return False
        self.seen = bool(state is not None and state.is_cancelling())
        return self.seen

    def close(self) -> None:
        if self._client is not None:
            self._client.__exit__(None, None, None)
            self._client = None


@contextmanager
def _progress_bars(env: dict[str, str]) -> Iterator[Bars | None]:
    """On a terminal, the stage reports progress as events and this process draws the bars,
    with log lines printed above them; elsewhere, no bars (the log lines say it all)."""
    if not sys.stderr.isatty():
        env[progress.MODE_ENV] = "off"
        yield None
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    env[progress.MODE_ENV] = "events"
    bars = Bars()
    try:
        with logging_redirect_tqdm([logging.getLogger(), logging.getLogger("prefect")]):
            yield bars
    finally:
        bars.close()


def _relay(stage: str, bars: Bars | None = None) -> Callable[[str], None]:
    """Re-log a stage's output line in this process, at the level the stage gave it."""
    stage_log = logging.getLogger(f"flows.stage.{stage}")

    def relay(line: str) -> None:
        if not line.strip() or (bars is not None and bars.handle(line)):
            return
        record = _CHILD_RECORD.match(line)
        if record:
            level, logger, message = record.groups()
            stage_log.log(logging.getLevelNamesMapping()[level], "%s: %s", logger, message)
        elif _ERROR_LINE.match(line):
            stage_log.error("%s", line)
        elif line.strip().startswith(_DVC_CHATTER):
            stage_log.debug("%s", line)
        else:
            stage_log.info("%s", line)

    return relay
