"""The `plumber` command's launcher: it runs the code of the checkout it is pointed at.

One venv may serve several checkouts (a worker's, a second clone). Its console script would
otherwise load the checkout the venv was installed from, whichever checkout it runs in: an
editable install records that one path. So the launcher puts the project root the command
is pointed at (`--root`, else the current directory) first on sys.path when it is a Plumber
checkout; elsewhere the installed code runs. The stages (`python -m tasks.<stage>`, run in
the project root) find that checkout's code first anyway.
"""

from __future__ import annotations

import sys
from pathlib import Path


def project_root(argv: list[str]) -> Path:
    for index, arg in enumerate(argv):
        if arg == "--root" and index + 1 < len(argv):
            return Path(argv[index + 1]).resolve()
        if arg.startswith("--root="):
            return Path(arg.partition("=")[2]).resolve()
    return Path.cwd()


def main() -> int:
    root = project_root(sys.argv[1:])
    checkout = (root / "flows" / "cli" / "__init__.py", root / "tasks" / "__init__.py")
    if all(path.is_file() for path in checkout):
        sys.path.insert(0, str(root))
    from flows.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
