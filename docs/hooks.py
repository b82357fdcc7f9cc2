"""mkdocs hook: the config reference written from `conf/` at build time, so it lists what ships and nothing else.

`docs/reference/config.md` holds the marker `<!-- conf-groups -->`; each config group (a folder of `conf/`) replaces
it with a table of its options (the default marked, each option's leading comment as its description) and every
option's YAML as it ships.
"""

from __future__ import annotations

from pathlib import Path

import yaml

CONF = Path(__file__).resolve().parent.parent / "conf"
MARKER = "<!-- conf-groups -->"
#: Groups that only shape Hydra's own output (help text, log format): not options a run picks.
INTERNAL = {"hydra/help", "hydra/job_logging"}


def defaults() -> dict[str, str]:
    """group -> the option `conf/config.yaml` picks (`override hydra/x: y` included)."""
    picked = {}
    for entry in yaml.safe_load((CONF / "config.yaml").read_text())["defaults"]:
        if isinstance(entry, dict):
            ((group, option),) = entry.items()
            picked[group.removeprefix("override ")] = option
    return picked


def description(text: str) -> str:
    """The comment lines before the first key, joined (Hydra's `@package` directive left out)."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if not line.startswith("# @package"):
            lines.append(line.lstrip("# ").rstrip())
    return " ".join(lines)


def group_section(group: str, picked: str | None) -> str:
    files = sorted((CONF / group).glob("*.yaml"))
    out = [f"## `{group}`", "", "| option | description |", "|---|---|"]
    for f in files:
        name = f"`{f.stem}` (default)" if f.stem == picked else f"`{f.stem}`"
        out.append(f"| {name} | {description(f.read_text()).replace('|', '&#124;')} |")
    for f in files:
        out += ["", f"### `{group}={f.stem}`", "", f"`conf/{group}/{f.name}`:", "", "```yaml", f.read_text().rstrip(), "```"]
    return "\n".join(out)


def config_reference() -> str:
    picked = defaults()
    groups = sorted(str(d.relative_to(CONF)) for d in CONF.rglob("*") if d.is_dir() and any(d.glob("*.yaml")))
    top = ["## Top level", "", "`conf/config.yaml`:", "", "```yaml", (CONF / "config.yaml").read_text().rstrip(), "```"]
    return "\n\n".join(["\n".join(top), *(group_section(g, picked.get(g)) for g in groups if g not in INTERNAL)])


def on_page_markdown(markdown: str, page, config, files) -> str:
    """mkdocs' hook: fill the marker where a page has it."""
    return markdown.replace(MARKER, config_reference()) if MARKER in markdown else markdown
