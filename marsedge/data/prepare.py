"""`marsedge data prepare ROOT`: what a downloaded AI4Mars release needs before training on it.

It reads only folder listings and says, for the tree at ROOT:
- which layout it is: release 0.1 (`msl/images/...`) or 0.6 and later (`msl/ncam/images/...`,
  `m2020/`, `label_keys.json`); the loader reads both as they are, nothing is moved;
- whether ROOT is the release's root (a download unpacked one level up is pointed to);
- every labelled split with its frame count, and the unlabelled frames (for distillation);
- whether labels need merging: a published release ships crowd-merged labels (`labels/train`),
  so nothing is to merge; only a tree with per-labeler crowd labels (`labels/crowd/<image>/`) and
  no merged labels needs `marsedge data merge-labels`, which `--merge` runs. Merged labels that
  exist are never replaced (merge-labels refuses them without --overwrite).
Then it prints the `data.root=` to give train.py and distill.py. A folder that is no release is a
one-line DataError naming it.
"""

from __future__ import annotations

from pathlib import Path

from marsedge.data.ai4mars import (
    LABEL_KEYS,
    M2020_CROWD,
    M2020_TRAIN,
    MSL_CROWD,
    MSL_TRAIN,
    available_splits,
    check_label_keys,
    list_items,
    msl_root,
)
from marsedge.errors import DataError


def release_of(root: Path) -> str | None:
    """"0.6" (msl/ncam/), "0.1" (msl/images/) or None when ROOT holds no MSL release."""
    if (root / "msl" / "ncam" / "images").is_dir():
        return "0.6"
    if (root / "msl" / "images").is_dir():
        return "0.1"
    return None


def find_release(root: Path) -> Path:
    """ROOT itself, or the one release folder directly inside it (an unpacked download)."""
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    if release_of(root):
        return root
    inside = [p for p in sorted(root.iterdir()) if p.is_dir() and release_of(p)]
    if len(inside) == 1:
        return inside[0]
    raise DataError(f"{root}: no AI4Mars release here (expected msl/images/ or msl/ncam/images/"
                    + (f"; several inside: {', '.join(p.name for p in inside)}" if inside else "") + ")")


def _count(folder: Path, pattern: str) -> int:
    return sum(1 for _ in folder.glob(pattern)) if folder.is_dir() else 0


def merges_needed(root: Path) -> list[tuple[Path, Path, str]]:
    """(crowd folder, merged-label folder, suffix) for each mission whose crowd labels have no
    merged labels yet."""
    pairs = [(msl_root(root) / MSL_CROWD, msl_root(root) / MSL_TRAIN, ""),
             (root / M2020_CROWD, root / M2020_TRAIN, "_merged")]
    return [(crowd, merged, suffix) for crowd, merged, suffix in pairs
            if _count(crowd, "*/") and not _count(merged, "*.png")]


def describe(root: Path) -> list[str]:
    """The report lines for a release root."""
    check_label_keys(root)
    release = release_of(root)
    lines = [f"{root}: AI4Mars release {release} layout"
             + (" (msl/ncam/, m2020/" + (", label_keys.json" if (root / LABEL_KEYS).is_file() else "") + ")"
                if release == "0.6" else " (msl/images/, msl/labels/)")]
    for split in available_splits(root):
        lines.append(f"  {split:<16} {len(list_items(root, split)):>6} labelled frames")
    lines.append(f"  {'unlabelled':<16} {len(list_items(root, 'unlabelled')):>6} frames without a label "
                 "(distill.unlabelled)")
    crowd = [c for c in (msl_root(root) / MSL_CROWD, root / M2020_CROWD) if _count(c, "*/")]
    if not merges_needed(root):
        lines.append("labels: merged labels present, nothing to merge"
                     + (" (crowd labels too: merge-labels re-merges them only into another --out, or "
                        "over these with --overwrite)" if crowd else ""))
    return lines


def prepare(root: str | Path, merge: bool = False, progress: bool = True) -> list[str]:
    """Describe the release at ROOT (merging what needs it with `merge`); the lines to print."""
    root = find_release(Path(root))
    lines = []
    for crowd, merged, suffix in merges_needed(root):
        command = (f"marsedge data merge-labels {crowd} --out {merged}"
                   + (f" --suffix {suffix}" if suffix else ""))
        if not merge:
            lines.append(f"needs merging: {crowd} has crowd labels and {merged} none; run `{command}` "
                         "(or `marsedge data prepare --merge`)")
            continue
        from marsedge.data.labels import merge_crowd_folder

        summary = merge_crowd_folder(crowd, merged, merged.parent / f"agreement-{merged.name}.csv",
                                     suffix=suffix, progress=progress)
        lines.append(f"merged {summary['images']} images of {crowd} into {merged}")
    lines = describe(root) + lines
    if not any(line.startswith("needs merging") for line in lines):
        lines.append(f"ready: train with data.root={root}")
    return lines
