"""Which configuration file a command reads, found without flags.

In order: `--config FILE`, else the `ROUTER_CONFIG` environment variable, else `router.toml`
in the working directory, else `config/router.toml` there (the file a checkout ships). None
of these: no file, every key at its default unless the environment sets it. A file named by
`--config` or `ROUTER_CONFIG` must exist; the two looked for in the working directory are
read only when they do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CONFIG_VARIABLE = "ROUTER_CONFIG"
LOOKED_FOR = ("router.toml", "config/router.toml")
"""Files tried in the working directory, in order, when neither flag nor variable names one."""


@dataclass(frozen=True)
class ConfigFile:
    """The file to read (None: none) and how it was chosen, for the start-up line."""

    path: Path | None
    chosen_by: str

    def describe(self) -> str:
        if self.path is None:
            return "no config file; defaults and ROUTER_* environment"
        return f"{self.path} ({self.chosen_by})"


def find_config_file(explicit: str | None, environ: Mapping[str, str], cwd: Path) -> ConfigFile:
    """The configuration file a command started in `cwd` reads."""
    if explicit:
        return ConfigFile(Path(explicit), "--config")
    if named := environ.get(CONFIG_VARIABLE, "").strip():
        return ConfigFile(Path(named), CONFIG_VARIABLE)
    for candidate in LOOKED_FOR:
        if (cwd / candidate).is_file():
            return ConfigFile(Path(candidate), "found in the working directory")
    return ConfigFile(None, "")
