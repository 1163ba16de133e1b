"""`python -m flows.cli`: the `plumber` command."""

from flows.cli import main

raise SystemExit(main())
