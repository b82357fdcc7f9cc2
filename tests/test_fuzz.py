"""Bad values fed to every leaf of the composed config, as a user would type them: each must stop the run before
training with one `ConfigError` naming the key (the CLI prints it as `error: ...` and exits 2), never a traceback.

Leaves: the default config's, and each optimizer's and scheduler's option. Values: wrong types for the leaf's
default (a word for a number, a number for a word, a list for a scalar, ...) and values no setting accepts (NaN,
a negative count). It composes and preflights each case, it does not train.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Iterator

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from optimlight.app.config import compose_config, options
from optimlight.app.overrides import hydra_error_line
from optimlight.app.preflight import preflight
from optimlight.plugin.errors import ConfigError

#: Leaves left out, with the reason: a path that would start a download, Hydra's and W&B's free-form names.
SKIPPED = {
    "data.data_dir": "a missing folder starts a torchvision download (its error is tested in test_cli)",
    "logger.wandb.name": "any string is a W&B run name",
    "logger.wandb.project": "any string is a W&B project name",
}
#: Bad values by the type of the leaf's default.
BAD_VALUES = {
    bool: ["maybe", "2"],
    int: ["abc", "1.5", "-5"],
    float: ["abc", "nan", "[1]"],
    str: ["1.5", "[x]"],
    list: ["abc", "[[1]]"],
    type(None): ["{a: 1}"],
}


def leaves(node, prefix: str = "") -> Iterator[tuple[str, object]]:
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from leaves(value, f"{path}.")
        else:
            yield path, value


@functools.cache
def composed(overrides: tuple[str, ...]) -> DictConfig:
    return compose_config(list(overrides), "/tmp/optimlight-fuzz")


def leaf_cases(base: tuple[str, ...], prefix: str = "") -> Iterator[tuple[tuple[str, ...], str, str]]:
    cfg = OmegaConf.to_container(composed(base), resolve=True)
    cfg.pop("hydra")
    for key, value in leaves(cfg):
        if key in SKIPPED or not key.startswith(prefix) or key.endswith("._target_"):
            continue
        for bad in BAD_VALUES.get(type(value), []):
            yield base, f"{key}={bad}", key
        if key.rsplit(".", 1)[-1] == "monitor":  # a metric nothing logs: Lightning only warns, once training runs
            yield base, f"{key}=val/nothing", key


def cases(base: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str, str]]:
    """(the group choices, one `key=value` override, the key the error must name)."""
    yield from leaf_cases(base)
    for option in options("optimizer"):
        yield from leaf_cases((*base, f"optimizer={option}"), "optimizer.")
    for option in options("scheduler"):
        if option != "none":
            yield from leaf_cases((*base, f"scheduler={option}"), "scheduler.")
    for group in ("optimizer", "scheduler", "model", "data"):
        yield base, f"{group}._target_=no.such.Class", f"{group}._target_"


def outcome(base: tuple[str, ...], override: str) -> str | None:
    """The error line the CLI would print for `python train.py <base> <override>`, or None when the run would start.

    Composing is what takes time (half a second a case), so each base is composed once and the override is applied
    as Hydra applies a value override to an existing key: its value parsed by Hydra's override parser, merged in.
    """
    cfg = copy.deepcopy(composed(base))
    try:
        parsed = OverridesParser.create().parse_override(override)
    except HydraException as error:
        return hydra_error_line(error)
    with open_dict(cfg):
        OmegaConf.update(cfg, parsed.key_or_group, parsed.value(), merge=True)
    with read_write(cfg.hydra.overrides.task):  # what Hydra records of the command line, read by the preflight
        cfg.hydra.overrides.task.append(override)
    HydraConfig.instance().set_config(cfg)
    try:
        preflight(cfg)
    except ConfigError as error:
        return str(error)
    return None


def test_every_leaf_refuses_bad_values_with_one_line_naming_it(data_dir):
    base = (f"data.data_dir={data_dir}", "logger=csv")
    start, results = time.perf_counter(), []
    for choices, override, key in cases(base):
        line = outcome(choices, override)  # anything else than a ConfigError or Hydra's error fails the test here
        results.append((override, key, line))
    seconds = time.perf_counter() - start
    accepted = [override for override, _, line in results if line is None]
    unnamed = [(override, line) for override, key, line in results if line is not None and key not in line.split(" is ")[0]]
    assert not accepted, f"bad values accepted: {accepted}"
    assert not unnamed, f"errors that do not name the key: {unnamed}"
    assert all("\n" not in line for _, _, line in results)
    assert len(results) >= 300
    print(f"{len(results)} bad values, {seconds:.1f} s")


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("model.dropout=1.5", "model.dropout=1.5 is not allowed: expected dropout probability has to be between 0 and 1"),
        ("trainer.devices=0", "trainer.devices=0 is not allowed"),
        ("trainer.val_check_interval=7.5", "trainer.val_check_interval=7.5 is not allowed"),
        ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0 is not allowed"),
        ("data.eval_batch_size=-5", "data.eval_batch_size=-5 is not allowed"),
        ("optimizer.amsgrad=maybe", "optimizer.amsgrad='maybe' is not allowed: expected true or false"),
        ("module.label_smoothing=-0.1", "module.label_smoothing=-0.1 is not allowed"),
        ("seed=1.5", "seed=1.5 is not allowed: expected an integer"),
        ("model.hidden=[0]", "model.hidden=[0] is not allowed: expected every layer width must be a positive integer"),
        ("optimizer.lr=inf", "optimizer.lr=inf is not allowed"),
        ("ckpt_path=nowhere.ckpt", "ckpt_path='nowhere.ckpt' is not allowed"),
        # issue 26's held-back list: each ran silently or crashed mid-training
        ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1 is not allowed: expected a finite number >= 0 or null"),
        ("trainer.val_check_interval=0", "trainer.val_check_interval=0 is not allowed"),
        ("trainer.val_check_interval=0.0", "trainer.val_check_interval=0.0 is not allowed"),
        (
            "callbacks.model_checkpoint.monitor=val/nothing",
            "callbacks.model_checkpoint.monitor='val/nothing' is not allowed: expected null or a metric the run logs",
        ),
    ],
)
def test_the_issues_bad_values(data_dir, override, line):
    got = outcome((f"data.data_dir={data_dir}", "logger=csv"), override)
    assert got is not None and got.startswith(line), got


def test_a_monitor_the_callbacks_log_is_accepted(data_dir):
    """`val/acc_ema` exists only with averaging=ema, which logs it: there it is a metric to monitor."""
    base = (f"data.data_dir={data_dir}", "logger=csv")
    assert outcome((*base, "averaging=ema"), "callbacks.model_checkpoint.monitor=val/acc_ema") is None
    assert outcome(base, "callbacks.model_checkpoint.monitor=val/acc_ema").startswith(
        "callbacks.model_checkpoint.monitor='val/acc_ema' is not allowed"
    )


def test_sgd_momentum_above_one_is_refused(data_dir):
    got = outcome((f"data.data_dir={data_dir}", "optimizer=sgd"), "optimizer.momentum=1.5")
    assert got == "optimizer.momentum=1.5 is not allowed: expected a number in [0, 1)"
