"""The code a run used, as git sees it, read and restored without touching the checkout.

A working copy is its HEAD commit plus a diff: every change to tracked files and every
untracked file git does not ignore (a new module counts as much as an edited one). Both
are read through a temporary index, so the user's index, branch and files stay as they
are; `materialize` writes the same tree into another folder.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.core.errors import StepError

EMPTY_DIFF = b""


def git(root: Path, *args: str, env: dict[str, str] | None = None, input: bytes | None = None,
        check: bool = True) -> bytes:  # fmt: skip
    """`git args` in `root`; its stdout. A failure is a StepError naming the command."""
    done = subprocess.run(
        ["git", "-c", "core.quotepath=off", *args], cwd=root, capture_output=True,
        input=input, env={**os.environ, **(env or {})}, timeout=120,
    )  # fmt: skip
    if check and done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        raise StepError(f"git {' '.join(args[:2])} failed in {root}: "
                        f"{detail[-1] if detail else f'exit {done.returncode}'}")  # fmt: skip
    return done.stdout


def is_repository(root: Path) -> bool:
    try:
        return git(root, "rev-parse", "--is-inside-work-tree", check=False).strip() == b"true"
    except OSError:  # no git on this machine
        return False


@dataclass(frozen=True)
class Snapshot:
    """The working copy: HEAD, and the tree of what is on disk (tracked and untracked)."""

    commit: str
    tree: str
    diff: bytes  # binary git diff from `commit` to `tree`; empty when clean

    @property
    def dirty(self) -> bool:
        return bool(self.diff)


def snapshot(
    root: Path, leave_out: Sequence[str] = (), extra: dict[str, bytes] | None = None
) -> Snapshot:
    """The working copy of `root` as a tree, but for the paths in `leave_out` (outputs
    the record holds otherwise), with `extra` files (path -> content) added on top; `diff`
    is the code's change alone, without `extra`."""
    if not is_repository(root):
        raise StepError(f"{root} is not a git repository: a record names the commit of the "
                        "code it ran (git init && git add -A && git commit)")  # fmt: skip
    commit = git(root, "rev-parse", "--verify", "--quiet", "HEAD", check=False).decode().strip()
    if not commit:
        raise StepError(f"the git repository at {root} has no commit yet: a record names the "
                        "commit of the code it ran (git add -A && git commit)")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="plumber-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        git(root, "read-tree", commit, env=env)
        git(root, "add", "--all", ".", env=env)
        if leave_out:  # back to the commit's version (or none): outputs are not code
            git(root, "reset", "-q", commit, "--", *leave_out, env=env)
        tree = git(root, "write-tree", env=env).decode().strip()
        diff = git(root, "diff", "--binary", "--no-color", "--no-ext-diff", commit, tree)
        for name, content in sorted((extra or {}).items()):
            blob = git(root, "hash-object", "-w", "--stdin", input=content).decode().strip()
            git(root, "update-index", "--add", "--cacheinfo", f"100644,{blob},{name}", env=env)
        if extra:
            tree = git(root, "write-tree", env=env).decode().strip()
    return Snapshot(commit, tree, diff)


def has_commit(root: Path, commit: str) -> bool:
    return bool(git(root, "cat-file", "-t", commit, check=False).strip() == b"commit")


def fetch_commit(root: Path, commit: str) -> bool:
    """Ask the git remotes for `commit` when this clone lacks it. True when it is here."""
    if has_commit(root, commit):
        return True
    for remote in git(root, "remote", check=False).decode().split():
        git(root, "fetch", "--quiet", remote, commit, check=False)
        if has_commit(root, commit):
            return True
    return False


def materialize(root: Path, commit: str, diff: bytes, dest: Path) -> None:
    """The files of `commit` (from `root`'s repository) with `diff` applied, in `dest`."""
    archive = git(root, "archive", "--format=tar", commit)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True, timeout=120)
    if diff:
        git(dest, "apply", "--binary", "--whitespace=nowarn", "-", input=diff)


def commit_to_branch(root: Path, branch: str, shot: Snapshot, message: str) -> str:
    """A commit of `shot.tree` on `branch`, after the branch's tip (and with the code's
    commit as second parent). Only that ref moves, compare-and-swap: never HEAD, the
    index, the working copy or any other branch. Returns the new commit."""
    ref = f"refs/heads/{branch}"
    tip = git(root, "rev-parse", "--verify", "--quiet", ref, check=False).decode().strip()
    parents = ["-p", tip] if tip else []
    if shot.commit != tip:
        parents += ["-p", shot.commit]
    who = (("NAME", "plumber"), ("EMAIL", "plumber@localhost"))
    identity = {
        f"GIT_{role}_{key}": value for role in ("AUTHOR", "COMMITTER") for key, value in who
    }
    new = git(root, "commit-tree", shot.tree, *parents, "-m", message, env=identity)
    new_id = new.decode().strip()
    git(root, "update-ref", "-m", "plumber: data version", ref, new_id, tip or "0" * 40)
    return new_id
