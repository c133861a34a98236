"""`marsedge cluster`: k-means on a previous model's features, for cluster-aware pretraining.

    marsedge cluster --checkpoint runs/simclr/best.pt --k 8 --data data/ai4mars -o runs/clusters_k8.json

Each frame's feature is the L2-normalised global average pool of the backbone's final map; k-means
(scikit-learn; MiniBatchKMeans beyond `MINIBATCH_ABOVE` frames) partitions them into K clusters.
The file maps frame names to cluster ids, which `pretrain.clusters` reads (`load_clusters`):

    {"k": 8, "checkpoint": "...", "frames": 1200, "sizes": [...], "inertia": ..., "clusters": {name: id}}

The homogeneous-Mars paper clusters with a texture-encoding ResNet-18 (its ref. 18); any
marsedge checkpoint with a backbone works here (a first SimCLR run is the natural choice).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from marsedge.data.frame_sources import FrameRef
from marsedge.errors import ConfigError, DataError
from marsedge.io import atomic_write_json
from marsedge.ssl.features import extract_features, frames_reader, load_backbone

MINIBATCH_ABOVE = 20000


def kmeans(features: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """Cluster ids (int64, N) of L2-normalised features, and the k-means inertia."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if not 1 <= k <= len(features):
        raise ConfigError(f"--k must be between 1 and the number of frames ({len(features)}), got {k}")
    x = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    if len(x) > MINIBATCH_ABOVE:
        algo = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096)
    else:
        algo = KMeans(n_clusters=k, random_state=seed, n_init=4)
    ids = algo.fit_predict(x)
    return ids.astype(np.int64), float(algo.inertia_)


def cluster_frames(checkpoint: str | Path, frames: list[FrameRef], k: int, out: str | Path,
                   batch_size: int = 32, seed: int = 0, device: str = "cpu") -> dict:
    """Features of `frames` from `checkpoint`, k-means, and the clusters file written atomically."""
    model, spec = load_backbone(checkpoint)
    paths = [f.path for f in frames]
    feats = extract_features(model, len(paths), frames_reader(paths), spec, batch_size, device,
                             progress="features")
    ids, inertia = kmeans(feats, k, seed)
    result = {
        "k": k,
        "checkpoint": str(checkpoint),
        "features": "backbone out, global average pool, L2-normalised",
        "frames": len(frames),
        "sizes": np.bincount(ids, minlength=k).tolist(),
        "inertia": inertia,
        "clusters": {f.name: int(c) for f, c in zip(frames, ids, strict=True)},
    }
    atomic_write_json(out, result)
    return result


def load_clusters(path: str | Path, num_clusters: int | None) -> dict[str, int]:
    """{frame name: cluster id} from a `marsedge cluster` file; K checked against the config."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config key 'pretrain.clusters': no such file {path}")
    try:
        data = json.loads(path.read_text())
        k, clusters = int(data["k"]), {str(n): int(c) for n, c in data["clusters"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise DataError(f"{path}: not a clusters file (expected JSON with 'k' and 'clusters')") from None
    if num_clusters is not None and k != num_clusters:
        raise ConfigError(f"config key 'pretrain.num_clusters' is {num_clusters} but {path} has K={k}")
    return clusters
