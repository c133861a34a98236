"""False negatives per SimCLR batch: the simulation of the homogeneous-Mars paper's appendix B.

SimCLR treats every pair of views from two different frames as a negative. When the two frames show
the same kind of scene (the same class) that pair is a false negative. For a batch of B frames
(2B views) the rate is

    FN rate = #(view pairs from different frames of the same class) / #(all view pairs)
            = 4 * sum_c C(n_c, 2) / C(2B, 2)        n_c = frames of class c in the batch

averaged over many simulated batches. For i.i.d. sampling its expectation is
sum_c p_c^2 * (2B - 2) / (2B - 1): for balanced classes about 1/K, independent of batch size and
dataset size beyond the first few frames, which is what the paper's Figure 6 shows.

Class distributions: balanced K classes, explicit weights, or a preset:
  imagenet   1000 balanced classes (ImageNet-1k is close to balanced)
  curiosity  an MSL v2.1-like 19-class distribution. The paper gives only its extremes (largest
             class 34.76 %, smallest 0.34 %); the other 17 classes are filled in geometrically
             between them (see `curiosity_like_distribution`), an assumption, not the real counts.

torch-free (numpy + matplotlib for the figure).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from marsedge.errors import ConfigError


def balanced(num_classes: int) -> np.ndarray:
    if num_classes < 1:
        raise ConfigError(f"--classes must be >= 1, got {num_classes}")
    return np.full(num_classes, 1.0 / num_classes)


def curiosity_like_distribution(num_classes: int = 19, largest: float = 0.3476,
                                smallest: float = 0.0034) -> np.ndarray:
    """`largest` for class 0, then num_classes - 1 classes decaying geometrically down to `smallest`,
    the ratio chosen (by bisection) so that the whole distribution sums to 1."""
    rest, n = 1.0 - largest, num_classes - 1

    def tail_sum(r: float) -> float:  # sum of smallest * r^-(n-1) * r^k for k < n
        return smallest * sum(r ** (k - n + 1) for k in range(n))

    lo, hi = 1e-6, 1.0 - 1e-9  # tail_sum falls as r grows
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if tail_sum(mid) > rest else (lo, mid)
    r = (lo + hi) / 2
    tail = smallest * r ** (np.arange(n) - n + 1.0)
    return np.concatenate([[largest], tail])


PRESETS = {
    "imagenet": lambda: balanced(1000),
    "curiosity": curiosity_like_distribution,
}


def parse_distribution(classes: int | None = None, weights: str | None = None,
                       preset: str | None = None) -> np.ndarray:
    """Exactly one of: K balanced classes, comma-separated weights, or a preset name."""
    given = [x is not None for x in (classes, weights, preset)]
    if sum(given) != 1:
        raise ConfigError("give exactly one of --classes, --weights, --preset")
    if classes is not None:
        return balanced(classes)
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"--preset: unknown {preset!r}; valid: {', '.join(PRESETS)}")
        return PRESETS[preset]()
    try:
        w = np.array([float(x) for x in weights.split(",") if x.strip()])
    except ValueError:
        raise ConfigError(f"--weights: not a comma-separated list of numbers: {weights!r}") from None
    if w.size == 0 or (w < 0).any() or w.sum() <= 0:
        raise ConfigError(f"--weights must be non-negative with a positive sum, got {weights!r}")
    return w / w.sum()


def batch_fn_rates(classes: np.ndarray, num_classes: int) -> np.ndarray:
    """FN rate of each batch. classes: batches x B frame class ids."""
    batches, b = classes.shape
    counts = np.zeros((batches, num_classes), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(batches), b), classes.ravel()), 1)
    same_class_frame_pairs = (counts * (counts - 1) // 2).sum(axis=1)
    all_view_pairs = (2 * b) * (2 * b - 1) // 2
    return 4 * same_class_frame_pairs / all_view_pairs


def simulate_fn_rate(probs: np.ndarray, batch_size: int, batches: int = 1000, dataset_size: int | None = None,
                     seed: int = 0) -> float:
    """Mean FN rate over `batches` simulated batches of `batch_size` frames.

    Frames are drawn i.i.d. from `probs`, or, with `dataset_size`, a finite dataset of that many frames
    is drawn once and each batch samples it without replacement (a real loader's epoch).
    """
    if batch_size < 2:
        raise ConfigError(f"--batch-size must be >= 2, got {batch_size}")
    rng = np.random.default_rng(seed)
    k = len(probs)
    if dataset_size is None:
        classes = rng.choice(k, size=(batches, batch_size), p=probs)
    else:
        if dataset_size < batch_size:
            raise ConfigError(f"dataset size {dataset_size} is smaller than the batch size {batch_size}")
        dataset = rng.choice(k, size=dataset_size, p=probs)
        picks = [rng.choice(dataset_size, batch_size, replace=False) for _ in range(batches)]
        classes = dataset[np.stack(picks)]
    return float(batch_fn_rates(classes, k).mean())


def expected_fn_rate(probs: np.ndarray, batch_size: int) -> float:
    """The closed form for i.i.d. sampling (checks the simulation)."""
    return float((probs**2).sum() * (2 * batch_size - 2) / (2 * batch_size - 1))


def plot_figure6(path: str | Path, batches: int = 300, seed: int = 0) -> dict:
    """The shape of the paper's Figure 6 (balanced classes): FN rate against the number of classes,
    the batch size and the dataset size. Returns the plotted series; writes a PNG atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from marsedge.io import atomic_write

    class_counts = [10, 19, 50, 100, 200, 500, 1000]
    batch_sizes = [8, 16, 32, 64, 128, 256, 512]
    dataset_sizes = [256, 1000, 5000, 20000, 100000]
    series = {
        "vs_classes": {b: [simulate_fn_rate(balanced(k), b, batches, seed=seed) for k in class_counts]
                       for b in (32, 128, 512)},
        "vs_batch": {k: [simulate_fn_rate(balanced(k), b, batches, seed=seed) for b in batch_sizes]
                     for k in (10, 19, 100)},
        "vs_dataset": {k: [simulate_fn_rate(balanced(k), 128, batches // 3, n, seed=seed)
                           for n in dataset_sizes] for k in (10, 19, 100)},
    }
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = [("vs_classes", class_counts, "number of classes (balanced)", "batch {}"),
              ("vs_batch", batch_sizes, "batch size (frames)", "{} classes"),
              ("vs_dataset", dataset_sizes, "dataset size (frames, batch 128)", "{} classes")]
    for ax, (key, xs, xlabel, legend) in zip(axes, panels, strict=True):
        for name, ys in series[key].items():
            ax.plot(xs, [100 * y for y in ys], marker="o", label=legend.format(name))
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("false negative view pairs (%)")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle("False negative view pairs per SimCLR batch (simulation, homogeneous-Mars paper app. B)")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)
    return {"class_counts": class_counts, "batch_sizes": batch_sizes, "dataset_sizes": dataset_sizes,
            **{k: {str(n): v for n, v in s.items()} for k, s in series.items()}}
