"""The run folder `runs/<name>/`: who owns it, when it may be replaced, what a resume may change.

- A run holds the folder for its whole life (rank 0 takes `marsedge.ownership.OutputLock`): a
  second train.py/distill.py aimed at the same folder is refused at once.
- A folder that holds an earlier run (finished or interrupted) is never written over: it is
  continued with `--resume`, or replaced, emptied first, with `--overwrite`.
- `--resume` continues the same work. The config must match what the run recorded (`config.yaml`
  plus the changes in `config_history.jsonl`), except for the keys in `MAY_CHANGE_ON_RESUME`
  (how long to train, how often to log, evaluate and checkpoint, where the run lives); an accepted
  change is appended to `config_history.jsonl` with the step it took effect at, and `config.yaml`
  stays what the run started with. Any other difference is a one-line refusal naming the keys.

torch is imported only inside `claim_run_dir`: the CLI's --help lists MAY_CHANGE_ON_RESUME.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from marsedge.config import from_dict, to_dict
from marsedge.errors import ConfigError, MarsedgeError
from marsedge.io import append_jsonl, atomic_write_text
from marsedge.ownership import LOCK_NAME, OutputLock

# Keys a resumed run may change: how long it trains, how often it logs, evaluates and checkpoints,
# what pretraining's feature probe watches, and where the run lives. Everything else decides what
# is learned (or which weights best.pt holds) and must stay as recorded.
MAY_CHANGE_ON_RESUME = (
    "name", "run.out_dir", "epochs", "run.max_steps", "run.log_every", "run.eval_every",
    "run.checkpoint_every", "run.early_stop_patience", "run.progress", "run.confusion_png",
    "run.curves", "run.tensorboard", "run.keep_checkpoints", "num_workers", "data.eval_batch_size",
    "pretrain.probe.frames", "pretrain.probe.method", "pretrain.probe.k", "pretrain.probe.bank",
    "pretrain.probe.height", "pretrain.probe.width",
)
# what an earlier run leaves in its folder (config.yaml alone: it stopped before its first checkpoint)
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "config.yaml")
HISTORY = "config_history.jsonl"


def claim_run_dir(run_dir: Path, resume: bool | str | Path, overwrite: bool, ctx,
                  command: str = "train") -> OutputLock | None:
    """Rank 0 locks `run_dir` for the run (release the returned lock when it ends) after checking
    that it may write there; every rank raises the same refusal, so none waits for a refused one.
    `ctx` is the run's DistContext."""
    from marsedge.train.engine.distributed import gather_objects  # torch: this module is read by --help

    lock, refusal = None, None
    if ctx.is_main:
        try:
            lock = OutputLock(run_dir, command).acquire()
            _check_and_clear(run_dir, resume, overwrite)
        except MarsedgeError as exc:
            if lock is not None:
                lock.release()
            if not ctx.distributed:
                raise
            refusal = exc
    messages = gather_objects(None if refusal is None else str(refusal), ctx)
    if refusal is not None:
        raise refusal
    if messages[0] is not None:
        raise ConfigError(messages[0])
    return lock


def release_run_dir(lock: OutputLock | None, run_dir: Path, created: bool) -> None:
    """Release the run's lock; a folder this run created and left holding nothing but the lock (a
    run refused while it was being set up) is removed, so a refusal leaves no trace."""
    if lock is None:
        return
    if created and [p.name for p in run_dir.iterdir()] == [LOCK_NAME]:
        (run_dir / LOCK_NAME).unlink()
        run_dir.rmdir()
    lock.release()


def _continues(run_dir: Path, resume: bool | str | Path) -> bool:
    """True when the resume continues this very folder (not a new run from another's checkpoint)."""
    return resume is True or (bool(resume) and Path(resume).resolve().parent == run_dir.resolve())


def _check_and_clear(run_dir: Path, resume: bool | str | Path, overwrite: bool) -> None:
    if _continues(run_dir, resume):
        if overwrite:
            raise ConfigError("--resume continues the run in its folder and --overwrite replaces it: "
                              "pass one of them")
        return
    earlier = [name for name in RUN_FILES if (run_dir / name).exists()]
    if not earlier:
        return
    if not overwrite:
        if not {"last.pt", "best.pt"} & set(earlier):
            raise ConfigError(f"{run_dir}: holds a run that stopped before its first checkpoint "
                              f"({', '.join(earlier)}); start it again with --overwrite")
        raise ConfigError(f"{run_dir}: holds an earlier run ({', '.join(earlier)}); continue it with "
                          "--resume or replace it with --overwrite")
    for entry in run_dir.iterdir():
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _plain(cfg) -> dict:
    """The config as YAML reads it back (tuples as lists), flattened to dotted keys."""
    return _flat(yaml.safe_load(yaml.safe_dump(to_dict(cfg), sort_keys=False)))


def recorded_config(run_dir: Path) -> dict | None:
    """The config in force at the end of the run in `run_dir` (dotted keys), None without one."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    try:
        config = _flat(yaml.safe_load(path.read_text()) or {})
        history = run_dir / HISTORY
        for line in history.read_text().splitlines() if history.is_file() else []:
            for key, change in json.loads(line).get("changed", {}).items():
                config[key] = change["to"]
    except (OSError, ValueError, yaml.YAMLError, AttributeError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: unreadable run config ({exc}); cannot check the resume") from None
    return config


def _read_back(cls: type, recorded: dict) -> dict:
    """The recorded config read through today's config class, flattened: a key the run's code did
    not have yet reads at its default, a key since renamed under its new name (the config class
    maps it). A record that no longer loads (a key since removed) is compared as it was written."""
    tree: dict = {}
    try:
        for key, value in recorded.items():
            *parents, last = key.split(".")
            node = tree
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value
        return _plain(from_dict(cls, tree))
    except (ConfigError, AttributeError, TypeError):
        return recorded


def config_changes(cfg, checkpoint: Path) -> dict[str, dict]:
    """What differs from the run that wrote `checkpoint` ({key: {"from", "to"}}); a key outside
    MAY_CHANGE_ON_RESUME is a ConfigError naming every such key."""
    recorded = recorded_config(checkpoint.parent)
    if recorded is None or not checkpoint.is_file():  # restore checks a bare checkpoint's model
        return {}
    now = _plain(cfg)
    missing = object()
    recorded = _read_back(type(cfg), recorded)
    changed = {key: {"from": recorded.get(key), "to": now.get(key)}
               for key in sorted(recorded.keys() | now.keys())
               if recorded.get(key, missing) != now.get(key, missing)}
    refused = [key for key in changed if key not in MAY_CHANGE_ON_RESUME]
    if refused:
        shown = ", ".join(f"{key} {changed[key]['from']!r} -> {changed[key]['to']!r}" for key in refused)
        raise ConfigError(f"cannot resume {checkpoint}: config keys differ from the run's ({shown}); a "
                          f"resume may change only {', '.join(MAY_CHANGE_ON_RESUME)} (start a new run "
                          "under another name, or replace this one with --overwrite)")
    return changed


def record_config(run_dir: Path, cfg, step: int, checkpoint: Path | None, changes: dict) -> None:
    """config.yaml is written when the run starts (checkpoint None) and never after; a resume that
    changes keys appends what changed, and from which step, to config_history.jsonl (a run started
    from another folder's checkpoint records that checkpoint there)."""
    continues = checkpoint is not None and checkpoint.resolve().parent == run_dir.resolve()
    if not continues:
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
        (run_dir / HISTORY).unlink(missing_ok=True)
        if checkpoint is not None:
            record = {"step": step, "resumed_from": str(checkpoint), "changed": changes}
            append_jsonl(run_dir / HISTORY, record)
    elif changes:
        append_jsonl(run_dir / HISTORY, {"step": step, "changed": changes})
