"""The distillation config: the training config plus a `distill:` section (teacher, ground-truth
weight, the distillation terms by name with their options, unlabelled frames, logit cache),
checked as a whole before any work starts. The terms and their options are those registered in
marsedge.distill.terms; the earlier flat keys (kd_weight, temperature, ...) still read (RENAMED).

    python distill.py --config configs/student/<name>.yaml        # the student is `model`
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from marsedge.config import REQUIRED, from_dict, to_dict
from marsedge.data.frame_sources import SourceConfig
from marsedge.errors import ConfigError
from marsedge.models.build import ModelConfig
from marsedge.train.config import TrainConfig

from .terms import TERMS, DistillTerm

CACHE_IN_RUN = "run"  # distill.cache_dir: the run's own folder
# earlier key -> (term, option) in `distill.terms`
RENAMED = {"kd_weight": ("kd", "weight"), "temperature": ("kd", "temperature"),
           "confidence_threshold": ("kd", "confidence_threshold"), "cwd_weight": ("cwd", "weight"),
           "cwd_tau": ("cwd", "tau"), "cwd_pairs": ("cwd", "pairs"), "feature_weight": ("feature", "weight"),
           "feature_pairs": ("feature", "pairs")}
_noted: set[str] = set()  # renamed keys already noted in this process


def _note_renamed(keys: list[str]) -> None:
    """One line on stderr, once per key and process, saying where a renamed key now lives."""
    fresh = [k for k in keys if k not in _noted]
    if fresh:
        _noted.update(fresh)
        moved = ", ".join(f"distill.{k} -> distill.terms.{'.'.join(RENAMED[k])}" for k in fresh)
        print(f"note: config keys renamed (read as the new ones): {moved}", file=sys.stderr)


@dataclass
class DistillSection:
    teacher: str = REQUIRED  # the frozen teacher's checkpoint, e.g. runs/<teacher>/best.pt
    # the teacher must have been trained on data.root (recorded in its checkpoint): true distils a
    # teacher of other data anyway (e.g. a teacher of the whole release onto a subset moved elsewhere)
    allow_other_data: bool = False
    teacher_precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16/fp16 on GPU, fp32 on CPU
    gt_weight: float = 1.0  # ground-truth loss (`loss.name`) on labelled pixels
    # The distillation terms by name, each with its `weight` and options (marsedge.distill.terms):
    # kd {weight, temperature, confidence_threshold}, cwd {weight, tau, pairs}, feature {weight, pairs}.
    # A term absent or at weight 0 is off; the default is pixel KD at weight 1, temperature 4.
    terms: dict[str, dict[str, Any]] = field(default_factory=lambda: {"kd": {}})
    # Earlier names of term options, still read: RENAMED moves them into `terms` (with a note once)
    # and leaves them null.
    kd_weight: float | None = None
    temperature: float | None = None
    confidence_threshold: float | None = None
    cwd_weight: float | None = None
    cwd_tau: float | None = None
    cwd_pairs: dict[str, str] | None = None
    feature_weight: float | None = None
    feature_pairs: dict[str, str] | None = None
    # Frames without labels added to the distillation set (only the KD terms learn from them):
    # sources as in pretraining, e.g. [{root: data/ai4mars, split: unlabelled}, {root: DIR, kind: folder}]
    unlabelled: list[SourceConfig] = field(default_factory=list)
    unlabelled_frames: int | None = None  # at most this many, drawn by proportion; null: all of them
    # How batches are drawn (marsedge.distill.sampling). balanced: each of the `batch_size` labelled
    # frames of a step comes with `unlabelled_per_labelled` unlabelled ones, and an epoch is one pass
    # over the labelled frames; pooled: batches drawn from labelled and unlabelled frames together
    # (few labelled frames among many unlabelled ones then barely reach the ground-truth term).
    sampling: Literal["balanced", "pooled"] = "balanced"
    unlabelled_per_labelled: int = 1
    # Teacher logits cached on disk for un-augmented frames (see marsedge.distill.cache); needs
    # data.augment.enabled false. null: the teacher runs live on every batch; `run`: in the run's own
    # folder (runs/<name>/teacher_logits); any other value: that folder (shared by student runs).
    cache_dir: str | None = None
    cache_batch_size: int = 8

    def cache_path(self, run_dir: Path) -> Path | None:
        """Where the logit cache lives (None: no cache, the teacher runs live)."""
        if not self.cache_dir:
            return None
        return run_dir / "teacher_logits" if self.cache_dir == CACHE_IN_RUN else Path(self.cache_dir)

    def __post_init__(self) -> None:
        """Move the options given under their earlier names into `terms` (an earlier key of a term
        the config does not list starts it at weight 0, as those keys did, except kd's; the new key
        wins where both are given, so `distill.terms.kd.temperature=4` overrides a YAML file's
        `temperature: 1.0`), then write
        every listed term with all its options, in registration order: two configs that mean the
        same read the same (a resume compares them)."""
        given = [key for key in RENAMED if getattr(self, key) is not None]
        self._given_as = {RENAMED[key] for key in given}  # (term, option) pairs given by earlier names
        written, self.terms = self.terms, {name: dict(options) if isinstance(options, dict) else options
                                           for name, options in self.terms.items()}
        if given:
            _note_renamed(given)
        for key in given:
            term, option = RENAMED[key]
            if isinstance(written.get(term), dict) and option in written[term]:
                print(f"note: config key 'distill.{key}' ignored: 'distill.terms.{term}.{option}' is given",
                      file=sys.stderr)
            else:
                options = self.terms.setdefault(term, {} if term == "kd" else {"weight": 0.0})
                options[option] = getattr(self, key)
            setattr(self, key, None)
        self.terms = {name: to_dict(term.options) for name, term in self.all_terms().items()}

    def key(self, term: str, option: str) -> str:
        """The config key of a term's option as the config names it: its earlier name where the
        config gave that term under earlier names."""
        if any(t == term for t, _ in self._given_as):
            earlier = next((k for k, v in RENAMED.items() if v == (term, option)), None)
            if earlier:
                return f"distill.{earlier}"
        return f"distill.terms.{term}.{option}"

    def all_terms(self) -> dict[str, DistillTerm]:
        """Every configured term with its typed options, in registration order (ConfigError for an
        unknown term or option)."""
        for name, options in self.terms.items():
            if name not in TERMS:
                raise ConfigError(f"config key 'distill.terms.{name}': no such distillation term "
                                  f"(terms: {', '.join(TERMS)})")
            if not isinstance(options, dict):
                raise ConfigError(f"config key 'distill.terms.{name}': expected a mapping, got {options!r}")
        return {name: cls(from_dict(cls.options_type, self.terms[name], prefix=f"distill.terms.{name}"))
                for name, cls in TERMS.items() if name in self.terms}

    def active_terms(self) -> dict[str, DistillTerm]:
        """The terms with a positive weight, in registration order (the order of the loss sum)."""
        return {name: term for name, term in self.all_terms().items() if term.weight > 0}

    @property
    def uses_stage_maps(self) -> bool:
        """Whether a term compares intermediate maps (not only logits) of student and teacher."""
        return any(term.needs_stage_maps() for term in self.active_terms().values())


@dataclass
class DistillConfig(TrainConfig):
    """`python distill.py --config configs/student/<name>.yaml`: the student is `model`."""

    mode: str = "distill"
    model: ModelConfig = field(default_factory=lambda: ModelConfig(backbone="mnv2_1.0", head="deeplabv3plus",
                                                                   separable=True))
    distill: DistillSection = field(default_factory=DistillSection)

    def validate(self) -> None:
        super().validate()
        d = self.distill
        if d.teacher in ("", REQUIRED):
            raise ConfigError("config key 'distill.teacher' is required: the teacher's checkpoint "
                              "(distill.teacher=runs/<teacher>/best.pt)")
        for i, src in enumerate(d.unlabelled):
            if not src.root:
                raise ConfigError(f"config key 'distill.unlabelled[{i}].root' is required: a tree or folder "
                                  "of unlabelled frames (distill.unlabelled=[] for none)")
        terms = d.all_terms()
        weights = {"distill.gt_weight": d.gt_weight,
                   **{d.key(name, "weight"): term.weight for name, term in terms.items()}}
        for key, value in weights.items():
            if value < 0:
                raise ConfigError(f"config key '{key}' must be >= 0, got {value}")
        if not any(v > 0 for v in weights.values()):
            raise ConfigError("config keys 'distill.gt_weight', 'distill.terms.*.weight': at least one loss "
                              "weight must be positive")
        for name, term in terms.items():
            term.check(lambda option, name=name: d.key(name, option))
        if any(src.proportion < 0 for src in d.unlabelled) or (
            d.unlabelled and sum(src.proportion for src in d.unlabelled) <= 0
        ):
            raise ConfigError("config key 'distill.unlabelled[*].proportion' must be >= 0 with a "
                              "positive sum")
        if d.cache_dir and self.data.augment.enabled:
            raise ConfigError(
                "config key 'distill.cache_dir': cached teacher logits belong to un-augmented frames; "
                "set data.augment.enabled=false or drop the cache (the teacher then runs live)"
            )
        if d.unlabelled_per_labelled < 0:
            raise ConfigError("config key 'distill.unlabelled_per_labelled' must be >= 0, got "
                              f"{d.unlabelled_per_labelled}")
        live = [n for n, t in d.active_terms().items() if t.needs_stage_maps() or not t.uses_cached_logits]
        if d.cache_dir and live:
            raise ConfigError(f"config key 'distill.cache_dir': the term(s) {', '.join(live)} need the live "
                              "teacher (its stage maps are not cached); set their weight to 0 (and cwd's "
                              "pairs to {}) or drop the cache")
