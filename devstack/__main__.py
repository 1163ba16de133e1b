"""`python -m devstack up|down|status` (make stack-up, stack-down, stack-status)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from devstack import control
from flows.local_server import ServerError


def format_status(data: dict[str, Any]) -> str:
    if not data["name"]:
        return "no stack under var/stack (`make stack-up` starts one)"
    lines = [f"stack {data['name']!r} on this machine's loopback:"]
    for service, rec in data["services"].items():
        health = "answering" if rec["answering"] else rec["state"].lower()
        where = f"{rec['url']:<24}{health} (pid {rec['pid']}, log {rec['log']})"
        lines.append(f"  {service:<13}{where}")
    dbs = ", ".join(data["databases"].values())
    lines.append(f"  postgresql   {data['postgres']} databases {dbs}")
    if data["profile"]:
        lines.append(f"use it: export PLUMBER_STACK={data['profile']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack", description=control.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    up_cmd = sub.add_parser("up", help="start the stack and write var/stack/stack.env")
    up_cmd.add_argument("--name", default="plumber", help="names its databases and bucket")
    up_cmd.add_argument("--timeout", type=float, default=900, help="bound for a wedged start")
    sub.add_parser("down").add_argument("--purge", action="store_true",
                                        help="also drop its databases and its folder")  # fmt: skip
    sub.add_parser("status").add_argument("--json", action="store_true", dest="as_json")
    args = parser.parse_args(argv)
    root = Path.cwd()

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        if args.command == "up":
            control.up(root, args.name, args.timeout, say)
        elif args.command == "down":
            control.down(root, args.purge, say)
            return 0
    except ServerError as exc:  # the stack's own errors among them
        print(f"error: {exc}", file=sys.stderr)
        return 1
    data = control.status(root)
    print(json.dumps(data, indent=2) if getattr(args, "as_json", False) else format_status(data))
    return 0 if all(s["answering"] for s in data["services"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
