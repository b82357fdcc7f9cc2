"""The notebooks execute top to bottom in quick mode (OPTIMLIGHT_NOTEBOOK_QUICK=1: every run one epoch of three
batches) in a kernel of this interpreter, on the real data, and show what they promise; plus the helpers they
share (optimlight.tools.notebooks) on real runs."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from hydra.errors import HydraException
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

from optimlight.app.record import read_results
from optimlight.plugin.errors import ConfigError
from optimlight.tools import notebooks as nu
from tests.conftest import REPO, TINY, TORCH_OPTIMIZERS

NOTEBOOKS = REPO / "notebooks"


def kernel_manager(tmp_path: Path) -> KernelManager:
    """A kernel running this interpreter (CI's fresh venv has no kernelspec of its own to rely on)."""
    spec = tmp_path / "kernels" / "optimlight"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "optimlight", "language": "python"}))
    return KernelManager(kernel_name="optimlight", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec.parent)]))


def execute(name: str, tmp_path: Path, data_dir: Path) -> nbformat.NotebookNode:
    """Run notebooks/<name> in quick mode, its runs under tmp_path/runs; raises CellExecutionError on any error."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    env = {**os.environ, nu.QUICK_ENV: "1", nu.OUT_ENV: str(tmp_path / "runs"), "OPTIMLIGHT_DATA_DIR": str(data_dir)}
    env.pop("MPLBACKEND", None)  # CI sets Agg; the kernel's inline backend is what renders figures as PNG
    client = NotebookClient(nb, km=kernel_manager(tmp_path), timeout=600, resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute(env=env)
    return nb


def outputs(nb, kind: str) -> list:
    """Every output of code cells carrying `kind`: "stdout" text, or a MIME type such as "image/png"."""
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if kind == "stdout" and out.output_type == "stream" and out.name == "stdout":
                found.append(out.text)
            elif kind in out.get("data", {}):
                found.append(out.data[kind])
    return found


def test_optimizer_comparison_runs_quick_and_reports_its_runs(tmp_path, data_dir):
    nb = execute("optimizer_comparison.ipynb", tmp_path, data_dir)
    runs = tmp_path / "runs" / "optimizer_comparison"
    seed003 = {
        name: json.loads((runs / "seed003" / name / "results.json").read_text()) for name in ("SGD", "Adagrad", "Adam", "AdamW")
    }
    grid = sorted(path.parent.relative_to(runs / "grid").as_posix() for path in (runs / "grid").glob("*/*/results.json"))
    assert grid == sorted(f"{o}/{s}" for o in TORCH_OPTIMIZERS for s in ("cosine", "onecycle", "plateau", "step"))
    assert len(grid) == 36
    for results in seed003.values():
        assert results["status"] == "completed" and len(results["epoch_times"]) == 1  # quick mode: one epoch
    choices = {name: r["choices"]["optimizer"] for name, r in seed003.items()}
    assert choices == {"SGD": "sgd", "Adagrad": "adagrad", "Adam": "adam", "AdamW": "adamw"}
    text = "".join(outputs(nb, "stdout"))
    for name, results in seed003.items():  # the printed final table holds the runs' own test accuracies
        assert re.search(rf"^{name}\s.*{results['metrics']['test/acc']:.4f}", text, re.MULTILINE), name
    # the runs' logs went to train.log: no Lightning lines, and no rich tables displayed as HTML
    assert "Seed set to" not in text and "Test metric" not in text and not outputs(nb, "text/html")
    assert len(outputs(nb, "image/png")) == 2  # the curves and the heatmap


def test_update_rules_runs_and_its_checks_hold(tmp_path, data_dir):
    nb = execute("update_rules.ipynb", tmp_path, data_dir)
    text = "".join(outputs(nb, "stdout"))
    for name in ("SGD", "ASGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW", "NAdam", "LBFGS"):
        assert re.search(rf"^{name}\s", text, re.MULTILINE), name  # a single-step row per optimizer
    assert len(outputs(nb, "image/png")) == 2  # Adam + L2 vs AdamW; the three seed-003 panels


def test_schedulers_notebook_draws_every_schedule(tmp_path, data_dir):
    nb = execute("schedulers.ipynb", tmp_path, data_dir)
    text = "".join(outputs(nb, "stdout"))
    for scheduler in nu.options("scheduler"):
        assert f"lr/{scheduler}" in text, scheduler  # each config in conf/scheduler/ is previewed
    assert "warmup_epochs=2" in text
    assert len(outputs(nb, "image/png")) == 5


def test_quick_mode_and_budget(monkeypatch):
    monkeypatch.delenv(nu.QUICK_ENV, raising=False)
    assert not nu.quick_mode()
    assert nu.budget(20) == ["trainer.max_epochs=20"]
    monkeypatch.setenv(nu.QUICK_ENV, "0")
    assert not nu.quick_mode()
    monkeypatch.setenv(nu.QUICK_ENV, "1")
    assert nu.quick_mode() and nu.budget(20) == list(nu.QUICK_LIMITS)


def test_output_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(nu.OUT_ENV, raising=False)
    assert nu.output_dir("x") == REPO / "outputs" / "notebooks" / "x"
    monkeypatch.setenv(nu.OUT_ENV, str(tmp_path))
    assert nu.output_dir("x") == tmp_path / "x"


def test_options_lists_a_config_group():
    assert nu.options("optimizer") == sorted(p.stem for p in (REPO / "conf" / "optimizer").glob("*.yaml"))
    assert set(TORCH_OPTIMIZERS) <= set(nu.options("optimizer")) and "none" in nu.options("scheduler")


def test_train_all_keeps_quiet_curves_and_a_diverged_run(tmp_path, data_dir, capsys):
    base = [f"data.data_dir={data_dir}", *TINY, "trainer.max_epochs=2", "callbacks.nonfinite_guard.check_every_n_steps=1"]
    jobs = nu.train_all({"adam": [*base, "optimizer=adam"], "diverged": [*base, "optimizer=sgd", "optimizer.lr=1e30"]}, tmp_path)
    printed = capsys.readouterr()
    assert printed.out.splitlines()[0].startswith("adam: completed, test/acc=")
    assert "Seed set to" not in printed.out + printed.err and "Test metric" not in printed.out
    assert "Test metric" in (tmp_path / "adam" / "train.log").read_text()  # the log kept what the notebook hides

    adam = jobs["adam"]
    curves = nu.epoch_metrics(adam.dir)
    assert list(curves.index) == [1, 2] and set(nu.EPOCH_METRICS) <= set(curves.columns)
    assert curves["val/acc"].max() == pytest.approx(adam.metric("val/acc_best"))
    assert curves["train/epoch_time"].tolist() == pytest.approx(adam.results["epoch_times"], abs=1e-3)

    diverged = jobs["diverged"]
    assert diverged.status == "failed" and "non-finite" in diverged.results["error"].lower()
    table = nu.results_table(jobs)
    assert table.loc["adam", "test/acc"] == adam.metric("test/acc") and table.loc["diverged", "status"] == "failed"
    assert pd.isna(table.loc["diverged", "test/acc"])
    assert nu.plot_training(jobs).axes[0].get_legend() is not None


@pytest.mark.parametrize(
    ("override", "error"), [("optimizer=nope", HydraException), ("optimizer.lr=-1", ConfigError)], ids=["hydra", "validate"]
)
def test_train_all_stops_at_a_bad_config(tmp_path, data_dir, override, error):
    with pytest.raises(error):
        nu.train_all(
            {"bad": [f"data.data_dir={data_dir}", *TINY, override], "next": [f"data.data_dir={data_dir}", *TINY]}, tmp_path
        )
    # a bad value is recorded in the job's results.json; a bad option stops composing, before any run dir
    assert read_results(tmp_path / "bad").get("status") == (None if error is HydraException else "failed")
    assert not (tmp_path / "next").exists()


def test_heatmap_writes_values_and_marks_failed_cells():
    grid = pd.DataFrame({"cosine": [0.81, np.nan], "step": [0.79, 0.5]}, index=["adam", "lbfgs"])
    ax = nu.plot_heatmap(grid, "t").axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["0.5000", "0.7900", "0.8100", "failed"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["adam", "lbfgs"]
