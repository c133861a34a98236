"""What the supervised modes share (finetune, semisup, distill): the training and test sets over the
AI4Mars reader, unlabelled frames, the evaluator on the gold sets, the configured loss with its class
frequencies, and the starting weights.

    SegmentationFrames(AI4MarsDataset, spec, augment) [i] -> {"image": float C,H,W, "label": long H,W,
                                                            "index": i}
    UnlabelledFrames(frame refs, spec, augment, seed) [i] -> the same with an all-ignore label
    LabelledThenUnlabelled(labelled, unlabelled)      -> both, items gain "index" and "labelled"
    training_set(cfg.data, seed) / validation_set(cfg.data, seed)  -> train minus val / val
    build_evaluator(cfg, ctx)                          -> SegmentationEvaluator on `val` (None: no val)
    build_test_evaluator(cfg, ctx)                     -> SegmentationEvaluator over cfg.data.test_splits
    build_loss_for(cfg, train_frames, ctx)             -> `loss.name`, class frequencies counted once
    initialise(model, cfg.init)                        -> the starting weights, a one-line description

Augmentation randomness comes from (seed, epoch, index) (`marsedge.data.augment.sample_rng`), so
a frame looks the same in a resumed run, under DDP and with any number of loader workers.

Evaluation: one confusion matrix per set, summed over ranks, then every metric of
`marsedge.metrics` and a confusion-matrix PNG per set. The result dict has the first set's scalars
unprefixed (`miou`, `pixel_accuracy`, ...) and every set's metrics under `<split>/<metric>`, per-class
dicts included, and its pixel confusion matrix as `<split>/confusion` (rows truth, columns
prediction). During training the only set is `val` (what best.pt and early stopping watch); the
test splits are scored once, by the loop, with the selected checkpoint (marsedge.train.engine.selection).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from marsedge.data.ai4mars import AI4MarsDataset, list_items
from marsedge.data.augment import JointAugmentConfig, geometric, photometric, sample_rng
from marsedge.data.frame_sources import FileId, FrameRef, file_id
from marsedge.data.frames import read_frame
from marsedge.data.preprocess import PreprocessSpec, preprocess, resize_label
from marsedge.errors import DataError, ModelError
from marsedge.io import atomic_write_json
from marsedge.metrics import plot_confusion, segmentation_metrics
from marsedge.terrain import CLASS_NAMES, IGNORE_INDEX
from marsedge.train.config import DataConfig, InitConfig, TrainConfig
from marsedge.train.engine.distributed import DistContext, ShardSampler, all_reduce_sum, barrier
from marsedge.train.losses import build_loss, needs_frequencies

# ---- datasets --------------------------------------------------------------------------------


class LabelledThenUnlabelled(Dataset):
    """A labelled set followed by an optional unlabelled one (semi-supervised training, distillation).

    Items gain `index` (their position in this set) and `labelled`; `set_epoch` reaches both parts.
    """

    def __init__(self, labelled: Dataset, unlabelled: Dataset | None = None) -> None:
        self.labelled = labelled
        self.unlabelled = unlabelled

    @property
    def n_labelled(self) -> int:
        return len(self.labelled)

    def set_epoch(self, epoch: int) -> None:
        for part in (self.labelled, self.unlabelled):
            if part is not None:
                part.set_epoch(epoch)

    def __len__(self) -> int:
        return self.n_labelled + (len(self.unlabelled) if self.unlabelled is not None else 0)

    def __getitem__(self, index: int) -> dict:
        n = self.n_labelled
        item = self.labelled[index] if index < n else self.unlabelled[index - n]
        return {**item, "index": index, "labelled": index < n}


def augmented(image: np.ndarray, label: np.ndarray | None, spec: PreprocessSpec,
              augment: JointAugmentConfig | None,
              rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray | None]:
    """One training frame: geometric augmentation of image and label together, THE preprocessing,
    photometric augmentation of the image (both skipped when `augment` is None). `rng` is the
    frame's own stream (sample_rng), so an epoch and index give the same augmentation anywhere."""
    if augment is not None:
        image, label = geometric(image, label, augment, rng)
    x = preprocess(image, spec)
    if augment is not None:
        x = photometric(x, augment, rng)
    return torch.from_numpy(np.ascontiguousarray(x)), label


class _AugmentedFrames(Dataset):
    """What both frame sets share: frames, THE preprocessing, augmentation drawn per (seed, epoch, index)."""

    def __init__(self, frames: AI4MarsDataset | list[FrameRef], spec: PreprocessSpec,
                 augment: JointAugmentConfig | None = None, seed: int = 0) -> None:
        self.frames = frames
        self.spec = spec
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by the loop before each epoch: a new epoch draws new augmentations."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.frames)

    def _augmented(self, image: np.ndarray, label: np.ndarray | None, index: int):
        return augmented(image, label, self.spec, self.augment, sample_rng(self.seed, self.epoch, index))


class SegmentationFrames(_AugmentedFrames):
    """Labelled AI4Mars frames (an AI4MarsDataset) as training/evaluation tensors (augmentation off
    when `augment` is None)."""

    @property
    def source(self) -> AI4MarsDataset:
        return self.frames

    def __getitem__(self, index: int) -> dict:
        sample = self.source[index]
        if sample.label is None:
            raise DataError(f"{self.source.items[index].image}: no label (training needs labelled frames)")
        x, label = self._augmented(sample.image, sample.label, index)
        y = resize_label(label, self.spec.height, self.spec.width)
        return {"image": x, "label": torch.from_numpy(y.astype(np.int64)), "index": index}


class UnlabelledFrames(_AugmentedFrames):
    """Frames without labels (frame refs from marsedge.data.frame_sources) as training tensors; their
    label is all ignore (255), so only terms that need no label learn from them. The one way semisup
    and distill read unlabelled frames. `seed` names the augmentation stream: give it one the labelled
    set does not use, so frame i of each set is not augmented alike."""

    def __getitem__(self, index: int) -> dict:
        x, _ = self._augmented(read_frame(self.frames[index].path), None, index)
        label = torch.full((self.spec.height, self.spec.width), IGNORE_INDEX, dtype=torch.int64)
        return {"image": x, "label": label, "index": index}


def split_training_labels(cfg: DataConfig, seed: int) -> tuple[list, list]:
    """(train, val) items of the train splits: val is `val_fraction` of each mission's labelled frames,
    whole clock groups at a time (seeded by data.val_seed, else the run's seed), carved before any
    composition, so every label fraction or mixed-domain set of a seed is tuned on the same val."""
    from marsedge.data import sampling

    items = [item for split in cfg.train_splits for item in list_items(cfg.root, split)]
    val_seed = seed if cfg.val_seed is None else cfg.val_seed
    return sampling.validation_split(items, cfg.val_fraction, val_seed)


def training_set(cfg: DataConfig, seed: int) -> AI4MarsDataset:
    """The training frames a config composes: the train splits together minus the val split, then
    the mixed-domain selection (when m2020_fraction is set), then the label fraction stratified by
    mission, then the max_train cap. Every selection is seeded and stable across machines."""
    from marsedge.data import sampling

    items, _ = split_training_labels(cfg, seed)
    if cfg.m2020_fraction is not None:
        items = sampling.mixed_domain(items, total=cfg.mixed_cap, m2020_fraction=cfg.m2020_fraction,
                                      seed=seed)
    if cfg.label_fraction < 1.0:
        items = sampling.label_fraction(items, cfg.label_fraction, seed=seed)
    if cfg.max_train is not None:
        items = items[: cfg.max_train]
    if not items:
        raise DataError(f"{cfg.root}: the configured training set is empty (splits {cfg.train_splits})")
    return AI4MarsDataset(cfg.root, "+".join(cfg.train_splits), four_class=cfg.four_class, items=items)


def validation_set(cfg: DataConfig, seed: int) -> AI4MarsDataset | None:
    """The `val` split (at most max_val frames); None when data.val_fraction is 0 or it came out empty
    (a single clock group per mission: nothing can be held out without splitting a drive)."""
    if cfg.val_fraction == 0:
        return None
    _, items = split_training_labels(cfg, seed)
    items = items[: cfg.max_val] if cfg.max_val is not None else items
    return AI4MarsDataset(cfg.root, "val", four_class=cfg.four_class, items=items) if items else None


def held_out_files(cfg: DataConfig, seed: int) -> dict[FileId, str]:
    """File id -> split of every image a run with this data config selects on (val) or is scored on
    (its test splits): what pretraining, distillation and semisup leave out of their unlabelled
    sources (marsedge.data.frame_sources.without_held_out). A tree without a split holds none of its
    frames."""
    if not Path(cfg.root).is_dir():
        return {}
    held: dict[FileId, str] = {}
    for split in cfg.test_splits:
        try:
            items = list_items(cfg.root, split)
        except DataError:  # no such split in this tree
            continue
        held |= {file_id(item.image): split for item in items}
    try:
        val = validation_set(cfg, seed)
    except DataError:  # no train split to carve val from
        val = None
    held |= {file_id(item.image): "val" for item in (val.items if val is not None else [])}
    return held


def test_sets(cfg: DataConfig) -> dict[str, AI4MarsDataset]:
    """The test set(s), in config order, scored once at the end with the selected checkpoint."""
    out = {}
    for split in cfg.test_splits:
        ds = AI4MarsDataset(cfg.root, split, four_class=cfg.four_class)
        if cfg.max_test is not None:
            ds = AI4MarsDataset(cfg.root, split, four_class=cfg.four_class, items=ds.items[: cfg.max_test])
        if len(ds) == 0:
            raise DataError(f"{cfg.root}: test split {split!r} has no frames")
        out[split] = ds
    return out


def _fingerprint(dataset: AI4MarsDataset, num_classes: int) -> str:
    h = hashlib.sha256(f"{dataset.four_class}|{num_classes}".encode())
    for item in dataset.items:
        h.update(f"{item.mission}/{item.name}\n".encode())
    return h.hexdigest()[:16]


def count_class_pixels(dataset: AI4MarsDataset, num_classes: int, progress: bool = False) -> np.ndarray:
    """Labelled pixels per class over the dataset's labels (masks folded in) at their native size."""
    from marsedge.data.stats import label_histogram

    return label_histogram(dataset.items, four_class=dataset.four_class, progress=progress)[:num_classes]


def class_frequencies(dataset: AI4MarsDataset, num_classes: int, cache_dir: str | Path,
                      progress: bool = False) -> np.ndarray:
    """f_c = pixels of class c / labelled pixels, computed once per training set and cached as JSON
    under cache_dir (keyed by the set's frame names), so every later run and rank reads the file."""
    path = Path(cache_dir) / f"class_frequencies_{_fingerprint(dataset, num_classes)}.json"
    if path.is_file():
        return np.asarray(json.loads(path.read_text())["frequencies"], dtype=np.float64)
    counts = count_class_pixels(dataset, num_classes, progress)
    if counts.sum() == 0:
        raise DataError(f"{dataset.root}: the training labels have no labelled pixel")
    freq = counts / counts.sum()
    atomic_write_json(path, {"frames": len(dataset), "pixels": counts.tolist(), "frequencies": freq.tolist()})
    return freq

# ---- evaluation ------------------------------------------------------------------------------


def build_eval_loader(dataset: Dataset, batch_size: int, ctx: DistContext, num_workers: int = 0,
                      collate_fn=None) -> DataLoader:
    """Each rank reads a disjoint share of the test set (no padding: no pixel counted twice)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      sampler=ShardSampler(len(dataset), ctx.world_size, ctx.rank),
                      collate_fn=collate_fn, pin_memory=ctx.device.type == "cuda")


@torch.no_grad()
def confusion_matrix(model: nn.Module, loader: DataLoader, num_classes: int, ctx: DistContext,
                     channels_last: bool = False) -> np.ndarray:
    """The KxK (truth x prediction) pixel counts of `model` on `loader`, summed over all ranks."""
    k = num_classes
    counts = torch.zeros(k * k, dtype=torch.int64, device=ctx.device)
    for batch in loader:
        image = batch["image"].to(ctx.device, non_blocking=True)
        if channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        target = batch["label"].to(ctx.device, non_blocking=True)
        pred = model(image).argmax(dim=1)
        keep = target != IGNORE_INDEX
        counts += torch.bincount(target[keep] * k + pred[keep], minlength=k * k)
    all_reduce_sum(counts, ctx)
    return counts.reshape(k, k).cpu().numpy()


class SegmentationEvaluator:
    """`evaluator(model, state) -> dict` for the training loop (see marsedge.train.engine.loop).
    `splits` names the sets it reads (the loop refuses to select on a test split)."""

    def __init__(self, loaders: dict[str, DataLoader], num_classes: int, confusion_png: bool = True) -> None:
        if not loaders:
            raise ValueError("SegmentationEvaluator needs at least one loader")
        self.loaders = loaders
        self.num_classes = num_classes
        self.confusion_png = confusion_png
        self.class_names = list(CLASS_NAMES[:num_classes])

    @property
    def splits(self) -> list[str]:
        return list(self.loaders)

    def __call__(self, model: nn.Module, state) -> dict:
        result: dict = {}
        for i, (split, loader) in enumerate(self.loaders.items()):
            matrix = confusion_matrix(model, loader, self.num_classes, state.ctx, state.cfg.run.channels_last)
            metrics = segmentation_metrics(matrix, self.class_names)
            if i == 0:
                result.update({k: v for k, v in metrics.items() if not isinstance(v, dict)})
            result.update({f"{split}/{k}": v for k, v in metrics.items()})
            result[f"{split}/confusion"] = matrix.tolist()  # rows truth, columns prediction (pixels)
            if self.confusion_png and state.ctx.is_main:
                plot_confusion(matrix, Path(state.run_dir) / f"confusion_{split}.png", self.class_names,
                               title=f"{split}, epoch {state.epoch + 1}")
        return result


def _evaluator(cfg: TrainConfig, ctx: DistContext, sets: dict[str, AI4MarsDataset]) -> SegmentationEvaluator:
    loaders = {split: build_eval_loader(SegmentationFrames(ds, cfg.data.preprocess), cfg.data.eval_batch_size,
                                        ctx, cfg.num_workers)
               for split, ds in sets.items()}
    return SegmentationEvaluator(loaders, cfg.model.num_classes, cfg.run.confusion_png)


def build_evaluator(cfg: TrainConfig, ctx: DistContext) -> SegmentationEvaluator | None:
    """Every metric on the `val` split, what training selects on (un-augmented, this rank's share);
    None when there is no val (then nothing is selected: best.pt is the final weights)."""
    val = validation_set(cfg.data, cfg.seed)
    return _evaluator(cfg, ctx, {"val": val}) if val is not None else None


def evaluation_sizes(evaluator: SegmentationEvaluator | None,
                     test_evaluator: SegmentationEvaluator | None) -> str:
    """"19 val frames; test gold-min1 6, gold-min3 6 frames": what a run selects on and is scored on."""

    def sizes(ev: SegmentationEvaluator) -> str:
        return ", ".join(f"{split} {len(loader.dataset)}" for split, loader in ev.loaders.items())

    val = f"{len(evaluator.loaders['val'].dataset)} val frames" if evaluator is not None else "no val split"
    return val + (f"; test {sizes(test_evaluator)} frames" if test_evaluator is not None else "")


def build_test_evaluator(cfg: TrainConfig, ctx: DistContext) -> SegmentationEvaluator:
    """Every metric on each of `data.test_splits`: run once, after training, on the selected weights."""
    return _evaluator(cfg, ctx, test_sets(cfg.data))


# ---- loss and starting weights ---------------------------------------------------------------


def build_loss_for(cfg: TrainConfig, train_frames: SegmentationFrames, ctx: DistContext) -> nn.Module:
    """The configured loss; weighted ones get class frequencies (rank 0 counts and caches them)."""
    freqs = None
    if needs_frequencies(cfg.loss.name):
        cache = cfg.run_dir.parent / ".cache"
        if ctx.is_main:
            class_frequencies(train_frames.source, cfg.model.num_classes, cache, progress=cfg.run.progress)
        barrier(ctx)
        freqs = class_frequencies(train_frames.source, cfg.model.num_classes, cache)
    return build_loss(cfg.loss.name, cfg.model.num_classes, freqs, cfg.loss.recall_momentum).to(ctx.device)


def initialise(model: nn.Module, init: InitConfig) -> str:
    """Load the configured starting weights into `model`; returns a one-line description."""
    if init.checkpoint is None:
        return "from scratch"
    from marsedge.models.checkpoints import load_checkpoint, load_weights
    from marsedge.models.importers import import_file

    if init.format == "marsedge":
        ckpt = load_checkpoint(init.checkpoint)
        part = "backbone" if init.backbone_only else "all"
        report = load_weights(model, ckpt.state_dict, part=part, source=init.checkpoint)
        if not report.loaded:
            raise ModelError(f"{init.checkpoint}: no {part} tensor matches the model ({report})")
        return f"{part} from {init.checkpoint}: {report}"
    state, _ = import_file(init.checkpoint, init.format, model.backbone)
    model.backbone.load_state_dict(state)
    return f"backbone from {init.format} weights {init.checkpoint}"
