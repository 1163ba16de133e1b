"""MkDocs hook: the CLI reference generated from the code. A page line `<!-- plumber help -->`
becomes every command's `--help`, as typer prints it (flows/cli/), so the reference cannot
fall behind the commands. (params.yaml, every key with its default and comment, comes in
through pymdownx.snippets: mkdocs.yml.)"""

from __future__ import annotations

from typing import Any

MARK = "<!-- plumber help -->"


def commands(group: Any, path: list[str]) -> list[tuple[list[str], Any]]:
    """Each command under `group`, depth first, with its words (`plumber demo init`)."""
    import click

    found = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += commands(command, [*path, name])
        else:
            found.append(([*path, name], command))
    return found


def help_text(words: list[str], command: Any) -> str:
    import click

    with click.Context(command, info_name=" ".join(words), terminal_width=100) as ctx:
        return command.get_help(ctx)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    if MARK not in markdown:
        return markdown
    import typer

    from flows.cli import app

    every = commands(typer.main.get_command(app), ["plumber"])
    sections = [f"### `{' '.join(words)}`\n\n```text\n{help_text(words, command)}\n```"
                for words, command in every]  # fmt: skip
    return markdown.replace(MARK, "\n\n".join(sections))
