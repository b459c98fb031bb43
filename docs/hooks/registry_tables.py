"""Option tables from the registry, so the parameters on the strategy pages are the ones the code takes.

A page writes ``<!-- options: self_consistency beta esc -->`` on a line of its own; the build
replaces it with one table per name: the registry's one-line description, aliases, whether it
replays on a recorded pool, and each option with its type and default (from the strict config
model the registry builds for ``ttc.registry.build``). A name the registry does not know fails
the build.
"""

from __future__ import annotations

import json
import re
from typing import Any

from mkdocs.exceptions import PluginError

MARKER = re.compile(r"^<!-- options: ([\w ]+) -->$", re.M)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _default(opt: dict[str, Any]) -> str:
    if opt.get("required"):
        return "required"
    if "default" not in opt:
        return "-"
    return f"`{json.dumps(opt['default'])}`"


def options_table(name: str, entry: dict[str, Any]) -> str:
    aliases = ", ".join(f"`{a}`" for a in entry["aliases"]) or "-"
    replay = "yes" if entry["replay"] else f"no ({entry.get('why_not_replay', '')})"
    lines = [
        f"**`{name}`** ({entry['kind']}; aliases {aliases}; replays on a pool: {replay}): {_cell(entry['doc'])}",
        "",
        "| option | type | default |",
        "|---|---|---|",
    ]
    for opt, spec in entry["options"].items():
        if not spec.get("configurable", True):
            continue
        default = _default(spec)
        if opt in entry.get("defaults", {}):
            default = f"`{json.dumps(entry['defaults'][opt])}` (registry default)"
        lines.append(f"| `{opt}` | {_cell(spec['type'])} | {_cell(default)} |")
    if entry.get("spec_shorthands"):
        short = ", ".join(f"`{s}`" for s in entry["spec_shorthands"])
        lines += ["", f"Spec shorthands: {short}."]
    return "\n".join(lines) + "\n"


def on_page_markdown(markdown: str, page, config, files) -> str:  # type: ignore[no-untyped-def]
    if "<!-- options:" not in markdown:
        return markdown
    from ttc.registry import describe_registry

    registry = describe_registry()

    def render(m: re.Match[str]) -> str:
        out = []
        for name in m.group(1).split():
            if name not in registry:
                raise PluginError(f"{page.file.src_uri}: '<!-- options: {name} -->' names no registry entry "
                                  f"(known: {', '.join(sorted(registry))})")
            out.append(options_table(name, registry[name]))
        return "\n".join(out)

    return MARKER.sub(render, markdown)
