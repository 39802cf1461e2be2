# ruff: noqa: UP031  (research scripts kept as they were run)
"""Dataset facts quoted in anomaly-design.md (sizes, masks, exposure groups, defect sizes).
Run: .venv/bin/python dataset_stats.py  (from ../shared/datasets/magnetic-tile)"""

import glob

import numpy as np
from PIL import Image

for d in sorted(glob.glob("MT_*")):
    fs = sorted(glob.glob(d + "/*.jpg"))
    sz = [Image.open(f).size for f in fs]
    w = np.array([s[0] for s in sz])
    h = np.array([s[1] for s in sz])
    fr = np.array([(np.array(Image.open(f[:-4] + ".png")) > 127).mean() for f in fs])
    print(
        d,
        len(fs),
        "w",
        w.min(),
        int(np.median(w)),
        w.max(),
        "h",
        h.min(),
        int(np.median(h)),
        h.max(),
        "mask frac med %.4f max %.4f empty %d" % (np.median(fr), fr.max(), (fr == 0).sum()),
    )
for S in (256,):
    for d in ["MT_Blowhole", "MT_Crack", "MT_Break", "MT_Fray", "MT_Uneven"]:
        a = []
        for f in sorted(glob.glob(d + "/*.png")):
            m = np.array(Image.open(f)) > 127
            if not m.any():
                continue
            s = S / max(m.shape)
            ys, xs = np.nonzero(m)
            a.append(min(np.ptp(ys) + 1, np.ptp(xs) + 1) * s)
        print(S, d, f"bbox short side p10 {np.percentile(a, 10):.1f} median {np.median(a):.1f} px")
