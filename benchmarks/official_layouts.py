"""Lay the real KTH walking/running clips out as UCF101, UCF50 and HMDB51 are laid out, with split
files in their real formats, so the official-split adapters run end to end on real footage.

The 100 clips of ``../shared/realdata/kth_walk_run`` (25 persons x walking, running x scenarios
d1, d4) become two classes, ``Walking`` and ``Running``, and each person a UCF group (``gNN``) or
an HMDB source movie (``personNN``): every fold then tests persons the model has never seen.

- ``ucf101/``: ``UCF-101/<Class>/v_<Class>_gNN_cMM.avi`` and ``ucfTrainTestlist/`` (CRLF), split k
  testing groups 7k-6..7k as the real lists do;
- ``ucf50/``: ``UCF50/<Class>/v_<Class>_gNN_cMM.avi`` (leave-one-group-out: 25 folds);
- ``hmdb51/``: ``hmdb51/<class>/personNN_<class>_dY.avi`` and ``testTrainMulti_7030_splits/``
  (flags 1 train, 2 test, 0 unused: split k tests persons with (person + k) % 3 == 0 and leaves
  persons 01 and 02 unused).

Clips are symbolic links; nothing is copied. Usage::

    python benchmarks/official_layouts.py OUT_DIR
    harx extract --dataset ucf50 --root OUT_DIR/ucf50 && harx compare --fold all
"""

from __future__ import annotations

import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "kth_walk_run"
CLASSES = {"walking": "Walking", "running": "Running"}
SCENARIOS = {"d1": 1, "d4": 2}
PERSONS = range(1, 26)


def _clips():
    for action, cls in CLASSES.items():
        for person in PERSONS:
            for scenario, clip in SCENARIOS.items():
                path = SRC / action / f"person{person:02d}_{action}_{scenario}_uncomp.avi"
                if path.is_file():
                    yield action, cls, person, scenario, clip, path


def _link(target: Path, source: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        target.symlink_to(source)


def ucf(out: Path, folder: str) -> list[str]:
    rel = []
    for _, cls, person, _, clip, path in _clips():
        name = f"{cls}/v_{cls}_g{person:02d}_c{clip:02d}.avi"
        _link(out / folder / name, path)
        rel.append(name)
    return rel


def ucf101(out: Path) -> None:
    rel = ucf(out, "UCF-101")
    lists = out / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    index = {cls: i for i, cls in enumerate(CLASSES.values(), 1)}
    (lists / "classInd.txt").write_bytes("".join(f"{i} {c}\r\n" for c, i in index.items()).encode())
    for k in (1, 2, 3):
        test = [r for r in rel if 7 * k - 6 <= int(r.split("_g")[1][:2]) <= 7 * k]
        train = [r for r in rel if r not in test]
        (lists / f"trainlist0{k}.txt").write_bytes("".join(f"{r} {index[r.split('/')[0]]}\r\n" for r in train).encode())
        (lists / f"testlist0{k}.txt").write_bytes("".join(f"{r}\r\n" for r in test).encode())


def hmdb51(out: Path) -> None:
    splits = out / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True, exist_ok=True)
    lines: dict[tuple[str, int], list[str]] = {}
    for action, _, person, scenario, _, path in _clips():
        name = f"person{person:02d}_{action}_{scenario}.avi"
        _link(out / "hmdb51" / action / name, path)
        for k in (1, 2, 3):
            flag = 0 if person <= 2 else 2 if (person + k) % 3 == 0 else 1
            lines.setdefault((action, k), []).append(f"{name} {flag} \r\n")
    for (action, k), rows in lines.items():
        (splits / f"{action}_test_split{k}.txt").write_text("".join(rows))


def main(out: str) -> None:
    if not SRC.is_dir():
        sys.exit(f"{SRC} not found: the real KTH walking/running clips are needed")
    out_dir = Path(out)
    ucf101(out_dir / "ucf101")
    ucf(out_dir / "ucf50", "UCF50")
    hmdb51(out_dir / "hmdb51")
    n = sum(1 for _ in _clips())
    print(f"{n} real clips laid out as ucf101, ucf50 and hmdb51 under {out_dir}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "layouts")
