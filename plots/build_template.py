"""Write plots/offline.html: DVC's page for `dvc plots show` with vega, vega-lite and
vega-embed inline, so the plots draw without internet (DVC's own page loads them from a
CDN). `.dvc/config` names the result (plots.html_template); `make plots-template` runs this
on the three packages fetched by `npm pack`. Usage:

    python plots/build_template.py VEGA_DIR VEGA_LITE_DIR VEGA_EMBED_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

BUILDS = {
    "vega": "vega.min.js",
    "vega-lite": "vega-lite.min.js",
    "vega-embed": "vega-embed.min.js",
}
OUT = Path(__file__).with_name("offline.html")


def script(package: Path, build: str) -> tuple[str, str]:
    """The package's name and version, and its build as a script element under its licence."""
    meta = json.loads((package / "package.json").read_text())
    code = (package / "build" / build).read_text()
    if "</script" in code or "-->" in (package / "LICENSE").read_text():
        raise SystemExit(f"{package}: its build or licence cannot be inlined")
    named = f"{meta['name']} {meta['version']}"
    licence = (package / "LICENSE").read_text().strip()
    return named, f"<!-- {named}, {meta['license']}:\n{licence}\n-->\n<script>{code}</script>"


def main(folders: list[str]) -> None:
    pairs = [script(Path(f), b) for f, b in zip(folders, BUILDS.values(), strict=True)]
    named, scripts = [n for n, _ in pairs], [s for _, s in pairs]
    OUT.write_text(
        "<!DOCTYPE html>\n"
        f"<!-- Made by plots/build_template.py: {', '.join(named)}, inline. -->\n"
        '<html>\n<head>\n{refresh_tag}\n<meta charset="utf-8">\n'
        "<title>Plumber: DVC plots</title>\n"
        + "\n".join(scripts)
        + "\n<style>body { font-family: sans-serif; } table { border-spacing: 15px; }</style>\n"
        "</head>\n<body>\n{plot_divs}\n</body>\n</html>\n"
    )
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB): {', '.join(named)}")


if __name__ == "__main__":
    main(sys.argv[1:])
