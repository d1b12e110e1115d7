"""Which classes a split lacks, said in one wording by ``harx extract`` and ``harx fit``.

A class with no training sample can never be predicted, and one with no test sample is not
measured; both used to pass in silence (a broken clip left a class without training videos
and ``harx fit`` reported 0 % on it without a word).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

SPLIT_WORDS = {"train": "training", "val": "validation", "test": "test"}
CONSEQUENCE = {
    "train": "no head can learn them, and their test samples count as errors",
    "val": "early stopping and model choice do not see them",
    "test": "the test scores say nothing about them",
}


def split_warnings(class_names: Iterable[str], samples: Iterable[tuple[str, str]]) -> list[str]:
    """One line per split that lacks classes, naming them; ``samples`` are ``(label, split)``.

    A class missing from train is always named; from val or test only when that split holds
    samples at all (an empty val split is a choice, not a gap). A class with no sample anywhere
    is named once, on its own line.

    Example: classes a, b, c; samples a/train, a/test, b/test -> ["class(es) with no sample at
    all: c", "class(es) with no training sample: b; no head can learn them, ..."].
    """
    names = list(class_names)
    count = Counter(samples)
    in_split = Counter(split for _, split in count.elements())
    anywhere = {label for label, _ in count}
    lines = []
    nowhere = [name for name in names if name not in anywhere]
    if nowhere:
        lines.append(f"class(es) with no sample at all: {', '.join(nowhere)}")
    for split, word in SPLIT_WORDS.items():
        if split != "train" and not in_split[split]:
            continue
        lacking = [name for name in names if name in anywhere and not count[(name, split)]]
        if lacking:
            lines.append(f"class(es) with no {word} sample: {', '.join(lacking)}; {CONSEQUENCE[split]}")
    return lines


__all__ = ["split_warnings"]
