# ruff: noqa: UP031, SIM115  (research scripts kept as they were run)
# Trivial image statistics as anomaly scores (held-out good = MT_Free not in DifferNet train list). Run from ../shared/datasets/magnetic-tile.
import glob
import os

import cv2
import numpy as np

train = set(
    open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "differnet_mtd_train.txt"))
    .read()
    .split()
)


def auroc(pos, neg):
    s = np.concatenate([pos, neg])
    r = s.argsort().argsort() + 1
    return (r[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


feats = {}
labels = []
kinds = []
rows = []
for d in sorted(glob.glob("MT_*")):
    for f in sorted(glob.glob(d + "/*.jpg")):
        if d == "MT_Free" and os.path.basename(f) in train:
            continue
        im = cv2.imread(f, cv2.IMREAD_GRAYSCALE).astype(np.float32)
        s = 256 / max(im.shape)
        im = cv2.resize(
            im, (round(im.shape[1] * s), round(im.shape[0] * s)), interpolation=cv2.INTER_AREA
        )
        im /= im.mean()
        m15 = cv2.blur(im, (15, 15))
        sq = cv2.blur(im * im, (15, 15))
        sd = np.sqrt(np.maximum(sq - m15**2, 0))
        m5 = cv2.blur(im, (5, 5))
        med = np.median(m15)
        bg = cv2.blur(im, (41, 41))
        rows.append(
            (d, im.std(), np.abs(m15 - med).max(), sd.max() / np.median(sd), np.abs(m5 - bg).max())
        )
names = [
    "global_std/mean",
    "max|local15-median|",
    "max local15 std / median",
    "max|local5-local41|",
]
kind = np.array([r[0] for r in rows])
X = np.array([r[1:] for r in rows])
good = kind == "MT_Free"
print("held-out good", good.sum(), "defects", (~good).sum())
for j, n in enumerate(names):
    per = {
        k: round(auroc(X[kind == k, j], X[good, j]), 3) for k in sorted(set(kind)) if k != "MT_Free"
    }
    print("%-28s all %.3f" % (n, auroc(X[~good, j], X[good, j])), per)
