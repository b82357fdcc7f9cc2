"""The wheel as a user installs it (not editable), run from another directory with a config dir of the user's own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY

USER_OPTIMIZER = '''
import torch


class SignSGD(torch.optim.Optimizer):
    """A user's own optimizer: p <- p - lr * sign(grad), with decoupled weight decay."""

    def __init__(self, params, lr=1e-3, weight_decay=0.0):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:  # torch's interface: re-evaluate the loss (Lightning passes its training step)
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.mul_(1 - group["lr"] * group["weight_decay"]).add_(p.grad.sign(), alpha=-group["lr"])
        return loss
'''


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """`pip wheel` + `pip install --no-deps --target`: the package and its console script outside the clone."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # a copy: setuptools writes build/ beside the sources, which must stay out of the clone
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for folder in ("optimlight", "conf", "hydra_plugins"):
        shutil.copytree(REPO / folder, source / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", str(source), "-w", str(root / "dist")],
        check=True,
        capture_output=True,
    )
    (wheel,) = (root / "dist").glob("optimlight-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(root / "site"), str(wheel)], check=True, capture_output=True)
    return root


def test_the_wheel_carries_the_config(installed):
    (wheel,) = (installed / "dist").glob("optimlight-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "optimlight/conf/config.yaml" in names
    assert "optimlight/conf/optimizer/adamw.yaml" in names
    assert "optimlight/conf/hydra/callbacks/sweep_summary.yaml" in names
    assert "optimlight/conf/hydra/launcher/population.yaml" in names
    assert "hydra_plugins/optimlight_population/population_launcher.py" in names  # where Hydra looks for launchers
    assert "optimlight/cli.py" in names  # the console script's module
    assert not [n for n in names if n.startswith("tests/") or n.endswith("/reference.py")]  # the test oracle stays home


@pytest.mark.slow
def test_installed_console_script_trains_a_user_optimizer_from_elsewhere(installed, tmp_path, data_dir):
    user = tmp_path / "user"
    (user / "my_conf" / "optimizer").mkdir(parents=True)
    (user / "my_optimizers.py").write_text(USER_OPTIMIZER)
    (user / "my_conf" / "optimizer" / "my_opt.yaml").write_text(
        "_target_: my_optimizers.SignSGD\nlr: 0.001\nweight_decay: 0.05\nno_decay: [bias, norm]\n"
    )
    site = installed / "site"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(user)])}
    env.pop("OPTIMLIGHT_DATA_DIR", None)
    run_dir = user / "run"
    cmd = [
        str(site / "bin" / "optimlight-train"),
        "--config-dir",
        "my_conf",
        "optimizer=my_opt",
        f"data.data_dir={data_dir}",
        f"hydra.run.dir={run_dir}",
        *TINY,
    ]
    done = subprocess.run(cmd, cwd=user, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    where = subprocess.run(
        [sys.executable, "-c", "import optimlight; print(optimlight.__file__)"],
        cwd=user,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(site))  # the wheel's copy ran, not the clone's
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "completed" and record["choices"]["optimizer"] == "my_opt"
    assert "SignSGD/decay" in done.stdout  # the audit table names the user's class and its groups


def test_an_unknown_user_option_is_one_line(installed, tmp_path, data_dir):
    user = tmp_path / "user"
    (user / "my_conf" / "optimizer").mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(installed / "site")}
    cmd = [
        str(installed / "site" / "bin" / "optimlight-train"),
        "--config-dir",
        "my_conf",
        "optimizer=nope",
        f"data.data_dir={data_dir}",
    ]
    done = subprocess.run(cmd, cwd=user, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "optimizer='nope' is not allowed: expected one of" in done.stderr and "adamw" in done.stderr
