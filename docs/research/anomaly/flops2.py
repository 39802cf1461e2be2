# ruff: noqa: UP031  (research scripts kept as they were run)
def conv(cin, cout, k, h, w=None):
    w = h if w is None else w
    return cin * cout * k * k * h * w


G = 1e9


def recon_s2d(S, widths, cin=1):
    # space-to-depth 2 -> 4*cin ch at S/2; encoder: per level 2x conv3, then stride-2 maxpool; no skips; decoder mirrors: upsample+2 conv3
    h = S // 2
    c = 4 * cin
    m = 0
    for i, w in enumerate(widths):
        m += conv(c, w, 3, h) + conv(w, w, 3, h)
        c = w
        if i < len(widths) - 1:
            h //= 2
    for w in reversed(widths[:-1]):
        h *= 2
        m += conv(c, w, 3, h) + conv(w, w, 3, h)
        c = w
    m += conv(c, 4 * cin, 3, h)  # to 4 ch then depth-to-space
    return m


def disc_s2d(S, widths, cin=2, cout=1):
    h = S // 2
    c = 4 * cin
    m = 0
    sk = []
    for i, w in enumerate(widths):
        m += conv(c, w, 3, h) + conv(w, w, 3, h)
        c = w
        sk.append((w, h))
        if i < len(widths) - 1:
            h //= 2
    for w, hh in reversed(sk[:-1]):
        h = hh
        m += conv(c + w, w, 3, h) + conv(w, w, 3, h)
        c = w
    m += conv(c, cout, 1, h)
    return m


S = 256
for rw, dw in (
    ([24, 48, 96, 96], [16, 32, 64, 64]),
    ([32, 64, 96, 128], [16, 32, 64, 96]),
    ([16, 32, 64, 64], [16, 32, 48, 64]),
    ([32, 64, 128, 128], [24, 48, 96, 96]),
):
    r = recon_s2d(S, rw)
    d = disc_s2d(S, dw)
    print(
        "recon",
        rw,
        "%.3f" % (r / G),
        "disc",
        dw,
        "%.3f" % (d / G),
        f"total {(r + d) / G:.3f} GMAC = {2 * (r + d) / G:.2f} GFLOP",
    )


# feature encoder for memory bank: s2d(2) -> 4ch @128 ; conv blocks widths, stride-2 each level; features at stride 4 and 8
def enc(S, widths):
    h = S // 2
    c = 4
    m = 0
    outs = []
    for _i, w in enumerate(widths):
        m += conv(c, w, 3, h) + conv(w, w, 3, h)
        c = w
        outs.append((w, h))
        h //= 2
    return m, outs


for ws in ([32, 64, 96], [32, 64, 128], [48, 96, 128]):
    m, outs = enc(S, ws)
    print("encoder", ws, "%.3f GMAC" % (m / G), outs)
# kNN cost: positions P at stride 8 (32x32=1024) dims d, bank M
for P, d, M in (
    (1024, 96, 4096),
    (1024, 96, 8192),
    (1024, 160, 8192),
    (4096, 96, 8192),
    (1024, 96, 16384),
):
    print(
        "kNN matmul P=%d d=%d M=%d: %.3f GMAC, bank %.1f MB"
        % (P, d, M, P * d * M / G, M * d * 4 / 1e6)
    )
print("Gaussian Mahalanobis P=1024 d=96: %.4f GMAC" % (1024 * 96 * 96 / G))
print(
    f"YOLO11n 640 6.5 GFLOP -> 42.4 ms: {6.5 / 0.0424:.0f} GFLOP/s ; @256 (x0.16=1.04 GFLOP) 13.19 ms: {6.5 * 0.16 / 0.01319:.0f} GFLOP/s"
)
print("---")
for rw, dw in (
    ([16, 32, 64, 64], [16, 32, 48, 64]),
    ([12, 24, 48, 48], [12, 24, 36, 48]),
    ([16, 32, 64], [16, 32, 48]),
):
    r = recon_s2d(S, rw)
    d = disc_s2d(S, dw, cin=2, cout=1)
    print(
        "DRAEM-S recon",
        rw,
        "%.3f" % (r / G),
        "disc",
        dw,
        "%.3f" % (d / G),
        f"total {(r + d) / G:.3f} GMAC; at 128 crops (train fwd) {(r + d) / 4 / G:.3f}",
    )
m, _ = enc(S, [32, 64, 96])
print("B encoder [32,64,96] %.3f GMAC" % (m / G))
print(
    f"proj 160->96 at 32x32: {160 * 96 * 1024 / G:.4f} GMAC; blur 33x33 depthwise at 256^2: {33 * 33 * 65536 / G:.3f} GMAC; separable: {2 * 33 * 65536 / G:.4f}"
)
m, _ = enc(S, [24, 48, 64])
print("B encoder [24,48,64] %.3f GMAC" % (m / G))
