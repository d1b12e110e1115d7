"""Split files of UCF101 and HMDB51 written in their real formats and quirks (CRLF, a BOM, the
HandStandPushups file names, HMDB51's 0/1/2 flags), for the adapter and download tests."""

from __future__ import annotations

from pathlib import Path

UCF_CLASSES = ["ApplyEyeMakeup", "HandstandPushups", "Shotput"]


def ucf_file(cls: str, group: int, clip: int) -> str:
    """``Class/v_Class_gNN_cNN.avi`` as UCF names its clips."""
    stem = "HandStandPushups" if cls == "HandstandPushups" else cls   # the real quirk
    return f"{cls}/v_{stem}_g{group:02d}_c{clip:02d}.avi"


def write_ucf_lists(folder: Path) -> Path:
    """ucfTrainTestlist/ for UCF_CLASSES, 25 groups of 2 clips each."""
    folder.mkdir(parents=True)
    crlf = "\r\n"
    (folder / "classInd.txt").write_bytes(("\ufeff" + crlf.join(f"{i} {c}" for i, c in enumerate(UCF_CLASSES, 1))
                                           + crlf).encode())
    for k in (1, 2, 3):
        test_groups = range(7 * (k - 1) + 1, 7 * k + 1)
        train, test = [], []
        for i, cls in enumerate(UCF_CLASSES, 1):
            for g in range(1, 26):
                for c in (1, 2):
                    (test if g in test_groups else train).append((ucf_file(cls, g, c), i))
        (folder / f"trainlist0{k}.txt").write_bytes("".join(f"{p} {i}{crlf}" for p, i in train).encode())
        (folder / f"testlist0{k}.txt").write_bytes(("".join(f"{p}{crlf}" for p, _ in test) + crlf).encode())
    return folder


def write_hmdb_splits(folder: Path, classes=("drink", "jump"), sources=6, clips=5) -> Path:
    """One <class>_test_split<k>.txt per class and fold; flags rotate so each fold leaves a third out."""
    folder.mkdir(parents=True)
    for cls in classes:
        files = [f"Movie_{s}_{cls}_u_nm_np1_fr_goo_{c}.avi" for s in range(sources) for c in range(clips)]
        for k in (1, 2, 3):
            flags = [(f, str((i + k) % 3)) for i, f in enumerate(files)]
            (folder / f"{cls}_test_split{k}.txt").write_text("".join(f"{f} {flag} \r\n" for f, flag in flags))
    return folder


