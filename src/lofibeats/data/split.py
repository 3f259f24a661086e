"""Train/val split by source file, decided by a hash of its relative path.

A source's split depends only on its own path (and `val_fraction`), so adding or removing files
never moves the others across the split. Tie-break, so both splits exist whenever there are at
least two sources: if no source falls in val, the one whose hash is lowest (closest to val) moves
to val; if none falls in train, the one whose hash is highest moves to train. This only ever
happens in tiny corpora.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

TRAIN, VAL = "train", "val"


def path_score(rel: str) -> float:
    """A stable, uniform number in [0, 1) for a relative path."""
    digest = hashlib.sha256(rel.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_splits(paths: Iterable[str], val_fraction: float) -> dict[str, str]:
    """{path: "train" | "val"}: val when its score is below `val_fraction`, then the tie-break."""
    scores = {path: path_score(path) for path in paths}
    splits = {path: VAL if score < val_fraction else TRAIN for path, score in scores.items()}
    if len(splits) >= 2:
        if VAL not in splits.values():
            splits[min(scores, key=scores.__getitem__)] = VAL
        if TRAIN not in splits.values():
            splits[max(scores, key=scores.__getitem__)] = TRAIN
    return splits
