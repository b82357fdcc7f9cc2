"""Where the Hydra config lives and how code outside the command line composes it.

`conf/` sits at the top of the repository; a wheel carries it as `optimlight/conf` (pyproject's package-dir), so
`optimlight-train` finds it after a non-editable install as well as from a clone.
"""

from __future__ import annotations

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
