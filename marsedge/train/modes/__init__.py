"""The training modes. Importing this package imports every module in it (each registers one Job with
`@register_mode`, marsedge.train.engine.job) and the modes other packages define (`PROVIDERS`), so a
new mode is one new module here: nothing else names it.

    finetune     supervised segmentation (teachers)          pretrain   SimCLR, cluster-aware SimCLR
    semisup      CE + element-wise contrastive, pseudo labels linear_eval frozen features, linear probe
    distill      a frozen teacher into a student (marsedge.distill.mode)
"""

from __future__ import annotations

import importlib
import pkgutil

from marsedge.errors import ConfigError
from marsedge.train.engine.job import MODES, Mode

# modes registered from outside this package
PROVIDERS = ("marsedge.distill.mode",)

for _module in sorted(info.name for info in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
for _module in PROVIDERS:
    importlib.import_module(_module)


def resolve_mode(name: str) -> Mode:
    """The registered mode called `name`; an unknown mode fails naming the config key."""
    if name not in MODES:
        raise ConfigError(f"config key 'mode': unknown mode {name!r} (valid: {', '.join(sorted(MODES))})")
    return MODES[name]
