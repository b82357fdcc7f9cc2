"""Every command the README and the docs site (`docs/**/*.md`) show, as written: each `python train.py` / preview
job composes and validates (a multirun once per swept value), each argparse command's arguments parse with the real
parser, and each other command is one that `.ci/run` or a named test runs. A command none of these covers fails the
test."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import open_dict

from optimlight.app.config import CONFIG_DIR
from optimlight.app.validate import validate
from tests.conftest import REPO, load_bench

#: The pages whose commands are checked: the README, then every page of the docs site.
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
#: Hydra's flags that only change what is printed.
HYDRA_FLAGS = {"--help": 0, "--cfg": 1, "-m": 0}
#: Commands no test can run as written, and where what they do is checked instead.
ELSEWHERE = {
    "pip install -e .[dev]": ".ci/run: pip install -q -e '.[dev]'",
    "pip install -e .[extra-optimizers]": ".ci/run installs .[dev], which includes it; tests/test_optimizers_beyond.py trains lion",
    "python -m pytest": ".ci/run's last line",
    "wandb sync": "needs W&B credentials and the network; tests/test_run_output.py checks the offline run it uploads",
    "optuna-dashboard": "serves until stopped; tests/test_tune.py reads the same sqlite:///.../optuna.db with Optuna",
    "jupyter execute": "13 minutes; tests/test_notebooks.py executes the same notebooks in quick mode",
}


def substitute(word: str, assigned: dict[str, str]) -> str:
    """`$NAME` replaced as the shell would (one pass: a value's own `${...}` stays for Hydra)."""
    return re.sub(r"\$(\w+)", lambda m: assigned[m.group(1)], word)


def shell_commands(text: str) -> list[list[str]]:
    """Each command of a page's bash blocks as its argv: continuation lines joined, comments dropped, the
    block's own `NAME=value` assignments and $HOME substituted, leading `VAR=value` environment settings kept."""
    commands = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.S):
        assigned = {"HOME": os.environ["HOME"]}
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if not words:
                continue
            words = [substitute(w, assigned) for w in words]
            if len(words) == 1 and re.fullmatch(r"[A-Z]+=.*", words[0]):
                name, value = words[0].split("=", 1)
                assigned[name] = value
                continue
            commands.append(words)
    return commands


def inline_train_commands(text: str) -> list[list[str]]:
    """`python train.py ...` in a page's prose; those with a placeholder (`<p>`) or a user's own config dir
    are patterns, not commands."""
    spans = re.findall(r"`(python train\.py [^`]*)`", text)
    return [shlex.split(" ".join(s.split())) for s in spans if "<" not in s and "my_conf" not in s]


def without_env(words: list[str]) -> list[str]:
    """The command after leading `VAR=value` settings."""
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
        words = words[1:]
    return words


def jobs(overrides: list[str]) -> list[list[str]]:
    """One job per swept value (the others at their first value), or the overrides themselves."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    first = [
        o.input_line if not o.is_sweep_override() else f"{o.get_key_element()}={next(o.sweep_string_iterator())}" for o in parsed
    ]
    runs = [first]
    for i, override in enumerate(parsed):
        if override.is_sweep_override():
            for value in list(override.sweep_string_iterator())[1:]:
                runs.append([*first[:i], f"{override.get_key_element()}={value}", *first[i + 1 :]])
    return runs


def hydra_overrides(args: list[str]) -> list[str]:
    """The overrides of a Hydra command line, its printing flags (`--help`, `--cfg job`, `-m`) left out."""
    kept, it = [], iter(args)
    for arg in it:
        if arg in HYDRA_FLAGS:
            for _ in range(HYDRA_FLAGS[arg]):
                next(it)
        else:
            kept.append(arg)
    return kept


def check_composes(config_name: str, overrides: list[str], tmp_path: Path) -> None:
    for job in jobs(overrides):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name, overrides=job, return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(tmp_path)
        HydraConfig.instance().set_config(cfg)
        validate(cfg)
    GlobalHydra.instance().clear()


class Parsed(Exception):
    """Raised in place of running a command once its arguments parsed."""


def check_parses(main, argv: list[str], monkeypatch) -> argparse.Namespace:
    """`main()` of an argparse command, stopped right after the real parser accepted `argv` (`parse_args` refuses
    unknown arguments, `parse_known_args` hands them on, as the bench scripts' train.py overrides)."""
    known, strict = argparse.ArgumentParser.parse_known_args, []

    def parse_known_then_stop(self, args=None, namespace=None):
        parsed, extras = known(self, args, namespace)
        if strict and extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        raise Parsed(parsed)

    def parse_then_stop(self, args=None, namespace=None):
        strict.append(True)
        return parse_known_then_stop(self, args, namespace)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", parse_known_then_stop)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(Parsed) as parsed:
        main()
    return parsed.value.args[0]


def page_commands() -> list[tuple[str, list[str]]]:
    """(page, argv) of every command the README and the docs show."""
    found = []
    for page in PAGES:
        text = page.read_text()
        name = str(page.relative_to(REPO))
        found += [(name, without_env(c)) for c in shell_commands(text)] + [(name, c) for c in inline_train_commands(text)]
    return found


def test_the_docs_pages_are_read():
    """The README and a page of each docs section are among the pages read, and each shows commands."""
    by_page = {page for page, _ in page_commands()}
    assert {"README.md", "docs/tutorials/first-run.md", "docs/how-to/sweeps.md", "docs/explanation/deepobs.md"} <= by_page


def test_every_readme_and_docs_command_is_checked(tmp_path, monkeypatch):
    from optimlight.tools import report

    commands = page_commands()
    assert len(commands) > 40  # the pages' blocks were found
    elsewhere = []
    for page, words in commands:
        line = " ".join(words)
        if words[:2] == ["python", "train.py"]:
            check_composes("config", hydra_overrides(words[2:]), tmp_path)
        elif words[:3] == ["python", "-m", "optimlight.tools.preview"]:
            check_composes("preview", hydra_overrides(words[3:]), tmp_path)
        elif words[:3] == ["python", "-m", "optimlight.tools.report"]:
            assert check_parses(report.main, ["report", *words[3:]], monkeypatch).sweep_dir
        elif words[0] == "python" and words[1].startswith("bench/"):
            bench = load_bench(Path(words[1]).stem)
            check_parses(bench.main, words[1:], monkeypatch)
        else:
            where = next((k for k in ELSEWHERE if line.startswith(k)), None)
            assert where, f"{page}: command checked nowhere: {line}"
            elsewhere.append(where)
        monkeypatch.undo()
    assert set(elsewhere) == set(ELSEWHERE)  # no stale entry
    ci = (REPO / ".ci" / "run").read_text()
    assert "install -q -e '.[dev]'" in ci and ci.rstrip().endswith("python -m pytest")


def test_jupyter_execute_is_installed():
    """The notebook command's tool: `jupyter execute` exists in this environment (the dev extra)."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "jupyter"), "execute", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "--inplace" in done.stdout
