"""Option tables of the ``ttc`` command, read from the command itself.

A page writes ``<!-- cli: run -->`` on a line of its own; the build replaces it with the
command's one-line help and a table of its options (flags, type, default, help), taken from
the Typer app in :mod:`ttc.bench.cli`. ``<!-- cli-commands -->`` lists every command. A
command that does not exist fails the build.
"""

from __future__ import annotations

import re
from typing import Any

from mkdocs.exceptions import PluginError

MARKER = re.compile(r"^<!-- cli: ([\w-]+) -->$", re.M)
LIST = "<!-- cli-commands -->"


def _group() -> Any:
    import typer

    from ttc.bench.cli import app

    return typer.main.get_command(app)


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _first_line(text: str | None) -> str:
    return _cell((text or "").strip().split("\n\n")[0])


def _type_name(p: Any) -> str:
    bare = getattr(p, "bare_type", None)  # Typer's own parameters
    if callable(bare):
        return str(bare())
    return str(getattr(p.type, "name", p.type))  # click's


def command_table(name: str, cmd: Any) -> str:
    lines = [_first_line(cmd.help), "", "| option | type | default | what |", "|---|---|---|---|"]
    for p in cmd.params:
        if p.name == "help" or not getattr(p, "opts", None):
            continue
        flags = ", ".join(f"`{o}`" for o in [*p.opts, *getattr(p, "secondary_opts", [])])
        if p.param_type_name == "argument":
            flags = f"`{p.name.upper()}` (argument)"
        kind = _type_name(p)
        if p.required:
            default = "required"
        elif p.default is None or callable(p.default) or getattr(p, "is_flag", False) and p.default is False:
            default = "-"
        else:
            default = f"`{p.default}`" if p.default != "" else '`""`'
        lines.append(f"| {flags} | {_cell(kind)} | {_cell(default)} | {_cell(getattr(p, 'help', '') or '')} |")
    return "\n".join(lines) + "\n"


def on_page_markdown(markdown: str, page, config, files) -> str:  # type: ignore[no-untyped-def]
    if "<!-- cli" not in markdown:
        return markdown
    group = _group()
    if LIST in markdown:
        rows = ["| command | what |", "|---|---|"]
        rows += [f"| `ttc {n}` | {_first_line(c.help)} |" for n, c in group.commands.items()]
        markdown = markdown.replace(LIST, "\n".join(rows) + "\n")

    def render(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in group.commands:
            raise PluginError(f"{page.file.src_uri}: '<!-- cli: {name} -->' names no ttc command "
                              f"(commands: {', '.join(group.commands)})")
        return command_table(name, group.commands[name])

    return MARKER.sub(render, markdown)
