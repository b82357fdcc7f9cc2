"""Where the Hydra config lives and how code outside the command line composes it.

`conf/` sits at the top of the repository; a wheel carries it as `optimlight/conf` (pyproject's package-dir), so
`optimlight-train` finds it after a non-editable install as well as from a clone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

PACKAGE = Path(__file__).resolve().parent.parent


def find_config_dir() -> Path:
    """The installed copy (`<site-packages>/optimlight/conf`) if there is one, else the repository's `conf/`."""
    installed = PACKAGE / "conf"
    return installed if (installed / "config.yaml").exists() else PACKAGE.parent / "conf"


CONFIG_DIR = str(find_config_dir())


def compose_config(overrides: Sequence[str] = (), run_dir: str | Path = "outputs/api") -> DictConfig:
    """The config of `python train.py <overrides>`, with Hydra's runtime (output dir, choices) set to `run_dir`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(Path(run_dir).resolve())
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


def config_choices() -> dict:
    """The option chosen in each config group (`optimizer: adamw`, ...), Hydra's own groups left out."""
    choices = HydraConfig.get().runtime.choices
    return {group: choice for group, choice in choices.items() if not group.startswith("hydra/")}


def options(group: str) -> list[str]:
    """The options of config group `group` (its YAML files), as `<group>=<option>` takes them."""
    return sorted(path.stem for path in (Path(CONFIG_DIR) / group).glob("*.yaml"))


#: Overrides that pick a repetition of a configuration (or how it is run) rather than a different one.
REPETITION_KEYS = ("seed", "skip_completed", "speed.num_threads")
#: W&B's limit on a job_type's length.
JOB_TYPE_LENGTH = 64


def configuration_overrides(overrides: Sequence[str]) -> list[str]:
    """The command line's overrides that define the configuration: `seed` (and Hydra's own keys) left out, so
    the runs of one configuration under several seeds share them."""
    kept = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key not in REPETITION_KEYS and not key.startswith("hydra."):
            kept.append(override)
    return kept


def configuration_label(overrides: Sequence[str]) -> str:
    """The configuration as a W&B job_type: its overrides, config-group choices first, at most 64 characters
    (a hash of the whole keeps long ones apart)."""
    kept = configuration_overrides(overrides)
    choices_first = [o for o in kept if "." not in o.split("=", 1)[0]] + [o for o in kept if "." in o.split("=", 1)[0]]
    label = " ".join(choices_first) or "default"
    if len(label) <= JOB_TYPE_LENGTH:
        return label
    digest = hashlib.sha1(label.encode()).hexdigest()[:8]
    return f"{label[: JOB_TYPE_LENGTH - 9]}~{digest}"
