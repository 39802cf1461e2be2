# ruff: noqa: UP031  (research scripts kept as they were run)
# analytic MAC counts (conv only; BN/ReLU/pool ignored), H=W=S
def conv(cin, cout, k, h, w):
    return cin * cout * k * k * h * w


def draem_recon(S, cin, b):
    # anomalib ReconstructiveSubNetwork: encoder 5 blocks (b,2b,4b,8b,8b), 4 maxpools; decoder mirrors w/o skips
    m = 0
    h = S
    ch = [b, 2 * b, 4 * b, 8 * b, 8 * b]
    c = cin
    for i, co in enumerate(ch):
        m += conv(c, co, 3, h, h) + conv(co, co, 3, h, h)
        c = co
        if i < 4:
            h //= 2
    # decoder: up (conv at upsampled res) + 2 convs per level, 4 levels: 8b->8b,8b->4b,4b->2b,2b->b, final conv b->cout
    dec = [(8 * b, 8 * b, 4 * b), (4 * b, 4 * b, 2 * b), (2 * b, 2 * b, b), (b, b, b)]
    for cu, c1, c2 in dec:
        h *= 2
        m += conv(c, cu, 3, h, h) + conv(cu, c1, 3, h, h) + conv(c1, c2, 3, h, h)
        c = c2
    m += conv(c, cin, 3, h, h)
    return m


def draem_disc(S, cin, b):
    # 6 encoder blocks (b,2b,4b,8b,8b,8b), 5 pools; decoder with skips (anomalib DecoderDiscriminative)
    m = 0
    h = S
    ch = [b, 2 * b, 4 * b, 8 * b, 8 * b, 8 * b]
    c = cin
    hs = []
    for i, co in enumerate(ch):
        m += conv(c, co, 3, h, h) + conv(co, co, 3, h, h)
        c = co
        hs.append(h)
        if i < 5:
            h //= 2
    # up_b: 8b->8b at h*2, db_b: 16b->8b, 8b->8b ; up1: 8b->4b, db1: 12b->4b,4b->4b; up2 4b->2b, db2 6b->2b,2b->2b; up3 2b->b, db3 3b->b, b->b; up4 b->b, db4 2b->b,b->b; fin b->2
    spec = [
        (8 * b, 8 * b, 16 * b, 8 * b),
        (8 * b, 4 * b, 12 * b, 4 * b),
        (4 * b, 2 * b, 6 * b, 2 * b),
        (2 * b, b, 3 * b, b),
        (b, b, 2 * b, b),
    ]
    for ci, cu, ccat, co in spec:
        h *= 2
        m += conv(ci, cu, 3, h, h) + conv(ccat, co, 3, h, h) + conv(co, co, 3, h, h)
    m += conv(b, 2, 3, h, h)
    return m


def unet_small(S, cin, widths, cout):
    # generic U-Net: per level 2 convs, maxpool; decoder: bilinear up + 1x1? use conv3 on concat + conv3
    m = 0
    h = S
    c = cin
    skips = []
    for i, w in enumerate(widths):
        m += conv(c, w, 3, h, h) + conv(w, w, 3, h, h)
        c = w
        skips.append((w, h))
        if i < len(widths) - 1:
            h //= 2
    for w, hh in reversed(skips[:-1]):
        h = hh
        m += conv(c + w, w, 3, h, h) + conv(w, w, 3, h, h)
        c = w
    m += conv(c, cout, 1, h, h)
    return m


def effad_pdn_s(S, cin=3, out=384):
    h = S - 3
    m = conv(cin, 128, 4, h, h)
    h = (h) // 2
    h = h - 3
    m += conv(128, 256, 4, h, h)
    h //= 2
    h = h - 2
    m += conv(256, 256, 3, h, h)
    h = h - 3
    m += conv(256, out, 4, h, h)
    return m


G = 1e9
for S in (256,):
    full = draem_recon(S, 3, 128) + draem_disc(S, 6, 64)
    print(
        "DRAEM full (anomalib widths 128/64, 3ch) @%d: recon %.1f + disc %.1f = %.1f GMAC"
        % (S, draem_recon(S, 3, 128) / G, draem_disc(S, 6, 64) / G, full / G)
    )
    for b in (8, 12, 16):
        r = draem_recon(S, 1, b)
        d = draem_disc(S, 2, b)
        print(
            " DRAEM same topology, 1ch, base %d (recon=disc=b): recon %.3f disc %.3f total %.3f GMAC"
            % (b, r / G, d / G, (r + d) / G)
        )
    for ws in ([16, 32, 64, 128], [16, 32, 64], [12, 24, 48, 96], [24, 48, 96, 128]):
        print(
            " small U-Net",
            ws,
            "1ch in: %.3f GMAC" % (unet_small(S, 1, ws, 1) / G),
            " 2ch in, 2 out: %.3f" % (unet_small(S, 2, ws, 2) / G),
        )
    print(
        "EfficientAD PDN-S teacher @256: %.2f GMAC (student has 2x out channels)"
        % (effad_pdn_s(S) / G)
    )
