"""One part at a time on the operator's screen (issue 13), in a real browser.

Against a running ``kanjian serve`` of the demo at full rate (its 12 images looping as
fast as the model judges them, about two thirds of them defects): the verdict block,
the big picture, the reason and the feedback buttons always carry the same
``data-inspection-id`` (sampled hundreds of times, from Python and on every animation
frame in the page), the picture shown is that inspection's own (its pixels against
the image file the store says it was), a defect stays up for the hold, a tapped
thumbnail shows that part with its own buttons, an answer can be undone and a
second one is audited as a change (read back with SQL), FAIL beeps and flashes when
asked to, and the verdict is big at 1920x1080 and whole at 1024x768.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from kanjian.station.config import DEMO_IMAGES
from tests.support import api as S
from tests.support.web import HOLD_S, Screen, screen_station

if S.CHROMIUM is None:  # pragma: no cover - CI installs it
    pytest.fail("Chromium not found: apt-get install -y chromium", pytrace=False)

DEFECTS = ("FAIL", "REVIEW")
THUMB = 48  # side of the grey thumbnails compared, px
UNDO_S = 5.0  # api.feedback_undo_s on this station: short, so a test sees Undo go
SETTLE_MS = 400  # part.js: a tap this soon after the part changed is refused

#: one reading of the shown part, in one task of the page (as a frame would be painted)
READ = """lastId => {
  const v = document.getElementById('verdict');
  const pic = document.getElementById('picture');
  const img = pic.querySelector('img');
  const s = {
    t: performance.now(),
    verdict: v.dataset.inspectionId || null,
    verdict_word: v.dataset.verdict,
    short_id: document.getElementById('verdict-id').textContent,
    picture: pic.dataset.inspectionId || null,
    img: img ? img.dataset.inspectionId : null,
    src: img ? img.getAttribute('src') : null,
    loaded: img ? img.complete && img.naturalWidth > 0 : false,
    reason: document.getElementById('verdict-reason').dataset.inspectionId || null,
    reason_title: document.getElementById('verdict-reason').title,
    feedback: document.getElementById('feedback').dataset.inspectionId || null,
    pixels: null,
  };
  if (img && s.loaded && s.img !== lastId) {
    const c = document.createElement('canvas');
    c.width = c.height = THUMB;
    const g = c.getContext('2d');
    g.imageSmoothingQuality = 'high';
    g.drawImage(img, 0, 0, c.width, c.height);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    s.pixels = [];
    for (let i = 0; i < d.length; i += 4) s.pixels.push((d[i] + d[i + 1] + d[i + 2]) / 3);
  }
  return s;
}""".replace("THUMB", str(THUMB))

#: the same four ids on every animation frame, into window.__frames
RAF = """() => {
  window.__frames = [];
  const id = (el) => document.getElementById(el).dataset.inspectionId || null;
  const tick = () => {
    const img = document.querySelector('#picture img');
    window.__frames.push([id('verdict'), id('picture'), img ? img.dataset.inspectionId : null,
      id('verdict-reason'), id('feedback')]);
    if (!window.__stopFrames) requestAnimationFrame(tick);
  };
  window.__stopFrames = false;
  requestAnimationFrame(tick);
}"""


@pytest.fixture(scope="module")
def screen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Screen]:
    with screen_station(tmp_path_factory.mktemp("screen"), feedback_undo_s=UNDO_S) as scr:
        scr.open()
        yield scr


def _grey(path: Path) -> np.ndarray[Any, Any]:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert img is not None, path
    return cv2.resize(img, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)


def _nearest_file(pixels: list[float]) -> tuple[Path, float, float]:
    """The demo image ``pixels`` (a THUMB² grey thumbnail of the shown picture) looks
    most like, its mean absolute difference, and the runner-up's. The border (the
    verdict's coloured frame) is left out."""
    shown = np.asarray(pixels, np.float32).reshape(THUMB, THUMB)[2:-2, 2:-2]
    diffs = sorted(
        (float(np.abs(_grey(p)[2:-2, 2:-2] - shown).mean()), p) for p in DEMO_IMAGES.glob("*.jpg")
    )
    return diffs[0][1], diffs[0][0], diffs[1][0]


def _sample(page: Any, n: int, every_ms: int = 40) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    last = None
    for _ in range(n):
        s = page.evaluate(READ, last)
        last = s["img"] if s["pixels"] is not None else last
        out.append(s)
        page.wait_for_timeout(every_ms)
    return out


def test_the_four_elements_always_show_the_same_part(screen: Screen) -> None:
    page = screen.page
    page.wait_for_selector("#picture img")
    page.evaluate(RAF)
    samples = _sample(page, 250)
    page.evaluate("() => { window.__stopFrames = true; }")
    frames: list[list[str | None]] = page.evaluate("() => window.__frames")
    print(f"samples: {len(samples)} from Python, {len(frames)} animation frames")
    assert len(samples) >= 200 and len(frames) >= 200
    for f in frames:
        assert f[0] and len(set(f)) == 1, f"the four elements differ on a frame: {f}"
    shown: dict[str, Path] = {}
    for s in samples:
        ids = {s["verdict"], s["picture"], s["img"], s["reason"], s["feedback"]}
        assert len(ids) == 1 and s["verdict"], f"the four elements differ: {s}"
        iid = s["verdict"]
        assert s["src"] == f"/api/screen/picture/{iid}?lang=zh", s  # labels in its language
        assert s["short_id"] == "#" + iid[:8]
        # verdict and reason are this inspection's, as the store has them
        verdict, reason, uri = screen.sql(
            "SELECT verdict, reason, uri FROM inspections WHERE id = ?", (iid,)
        )[0]
        assert s["verdict_word"] == verdict and s["reason_title"] == reason, (s, verdict, reason)
        if s["pixels"] is not None and iid not in shown:
            # the picture is this inspection's own: its pixels are the file it was made of
            best, diff, runner_up = _nearest_file(s["pixels"])
            assert best == Path(uri), (iid, best, uri, diff, runner_up)
            assert diff < 0.5 * runner_up, (iid, diff, runner_up)
            shown[iid] = best
    assert len(shown) >= 4, f"only {len(shown)} parts were shown in {len(samples)} samples"


def test_a_defect_holds_and_defects_come_in_order(screen: Screen) -> None:
    """Each defect stays up at least api.screen_hold_s, read from the page's own clock:
    a defect first seen in sample k came up after sample k-1, so every sample taken
    within the hold of sample k-1 must still show it. Defects come up in the order
    the store committed them."""
    page = screen.page
    page.wait_for_selector("#back-live", state="hidden")
    samples = _sample(page, 300, every_ms=30)
    changes = [
        k for k in range(1, len(samples)) if samples[k]["verdict"] != samples[k - 1]["verdict"]
    ]
    held = 0
    for k in changes:
        s = samples[k]
        if s["verdict_word"] not in DEFECTS:
            continue
        before = samples[k - 1]["t"]
        later = [x for x in samples[k:] if x["t"] < before + 1000 * HOLD_S]
        assert all(x["verdict"] == s["verdict"] for x in later), (s["verdict"], later)
        held += 1
    assert held >= 3, f"only {held} defects came up in {len(samples)} samples"
    order = [samples[k]["verdict"] for k in changes if samples[k]["verdict_word"] in DEFECTS]
    seqs = [screen.sql("SELECT seq FROM inspections WHERE id = ?", (i,))[0][0] for i in order]
    assert seqs == sorted(seqs), seqs
    assert len(set(seqs)) == len(seqs)


def _select(page: Any, nth: int) -> str:
    """Tap the ``nth`` thumbnail; return its id once the four elements show it."""
    page.dispatch_event("#thumbs", "pointerdown")  # a finger on the strip holds it still
    thumb = page.locator("#thumbs .thumb").nth(nth)
    iid: str = thumb.get_attribute("data-inspection-id")
    page.locator(f"#thumbs .thumb[data-inspection-id='{iid}']").click()
    _shows(page, iid)
    return iid


def _shows(page: Any, iid: str) -> None:
    """Wait until the four elements show ``iid``, and long enough that a tap on its
    buttons counts (a tap right after a change is refused: it was aimed at the part
    before)."""
    page.wait_for_function(
        "id => ['verdict', 'picture', 'verdict-reason', 'feedback'].every("
        "e => document.getElementById(e).dataset.inspectionId === id)",
        arg=iid,
    )
    page.wait_for_timeout(SETTLE_MS + 100)


def _unanswered(screen: Screen, page: Any, avoid: tuple[str, ...] = ()) -> str:
    """A thumbnail's inspection never answered (and not ``avoid``)."""
    ids = page.evaluate(
        "() => [...document.querySelectorAll('#thumbs .thumb')].map(b => b.dataset.inspectionId)"
    )
    # ever answered: an undone answer's row is gone, its audit row stays
    answered = {r[0] for r in screen.sql("SELECT DISTINCT inspection_id FROM feedback")}
    answered |= {
        r[0] for r in screen.sql("SELECT target FROM audit WHERE action LIKE 'feedback.%'")
    }
    free = [i for i in ids if i not in answered and i not in avoid]
    assert free, f"every thumbnail has an answer: {ids}"
    return str(free[0])


def _select_unanswered(screen: Screen, page: Any, avoid: tuple[str, ...] = ()) -> str:
    """Tap a thumbnail whose part has no answer; return its id once it shows."""
    page.dispatch_event("#thumbs", "pointerdown")  # the strip holds still under a finger
    iid = _unanswered(screen, page, avoid)
    page.locator(f"#thumbs .thumb[data-inspection-id='{iid}']").click()
    _shows(page, iid)
    return iid


def test_a_tapped_thumbnail_shows_that_part_and_stays(screen: Screen) -> None:
    page = screen.page
    page.wait_for_function("() => document.querySelectorAll('#thumbs .thumb').length >= 4")
    iid = _select(page, 2)
    assert page.get_attribute("#thumbs .thumb.selected", "data-inspection-id") == iid
    assert page.is_visible("#back-live")
    # it stays while the line goes on (no newer defect takes its place), well past a hold
    samples = _sample(page, 40, every_ms=100)
    assert samples[-1]["t"] - samples[0]["t"] > 1000 * HOLD_S
    assert {s["verdict"] for s in samples} == {iid}
    assert {s["feedback"] for s in samples} == {iid}
    iid2 = _select(page, 0)  # another: verdict, picture, reason and buttons all switch
    assert iid2 != iid
    page.click("#back-live")
    page.wait_for_function(
        "id => document.getElementById('verdict').dataset.inspectionId !== id", arg=iid2
    )
    assert page.is_hidden("#back-live")


def _audit(screen: Screen, iid: str) -> list[tuple[str, dict[str, Any]]]:
    rows = screen.sql("SELECT action, detail_json FROM audit WHERE target = ? ORDER BY id", (iid,))
    return [(a, json.loads(d)) for a, d in rows]


def test_an_answer_can_be_undone(screen: Screen) -> None:
    page = screen.page
    page.wait_for_function("() => document.querySelectorAll('#thumbs .thumb').length >= 2")
    iid = _select_unanswered(screen, page)
    page.click("#fb-not")
    page.wait_for_selector(f"#fb-result[data-kind=not_defect][data-inspection-id='{iid}']")
    assert "已记录" in (page.text_content("#fb-result") or "")
    assert page.is_visible("#fb-undo")
    rows = screen.sql(
        "SELECT id, kind, actor, created_at FROM feedback WHERE inspection_id = ?", (iid,)
    )
    assert [r[1] for r in rows] == ["not_defect"]
    page.click("#fb-undo")
    page.wait_for_selector(f"#fb-result[data-kind=''][data-inspection-id='{iid}']")
    assert "已撤销" in (page.text_content("#fb-result") or "")
    # gone from the feedback table, kept whole in the audit
    assert screen.sql("SELECT id FROM feedback WHERE inspection_id = ?", (iid,)) == []
    assert screen.stored(iid)["feedback"] is None
    actions = _audit(screen, iid)
    assert [a for a, _ in actions] == ["feedback.create", "feedback.undo"]
    undone = actions[1][1]["undone"]
    assert (undone["id"], undone["kind"], undone["actor"], undone["created_at"]) == rows[0]
    assert actions[1][1]["standing"] is None


def test_a_second_answer_is_a_change_and_shows_until_the_part_changes(screen: Screen) -> None:
    page = screen.page
    page.wait_for_function("() => document.querySelectorAll('#thumbs .thumb').length >= 3")
    iid = _select_unanswered(screen, page)
    page.click("#fb-confirm")
    page.wait_for_selector(f"#fb-result[data-kind=confirm_defect][data-inspection-id='{iid}']")
    page.click("#fb-not")
    page.wait_for_selector(f"#fb-result[data-kind=not_defect][data-inspection-id='{iid}']")
    assert "已更改" in (page.text_content("#fb-result") or "")
    assert page.get_attribute("#fb-not", "class") and "chosen" in page.get_attribute(
        "#fb-not", "class"
    )
    rows = screen.sql("SELECT id, kind FROM feedback WHERE inspection_id = ? ORDER BY id", (iid,))
    assert [k for _, k in rows] == ["confirm_defect", "not_defect"]  # both kept
    actions = _audit(screen, iid)
    assert [a for a, _ in actions] == ["feedback.create", "feedback.change"]
    change = actions[1][1]
    assert (change["old"]["id"], change["old"]["kind"]) == rows[0]
    assert (change["new"]["id"], change["new"]["kind"]) == rows[1]
    # another part, one with no answer: none shows; back: this one's answer again
    other = _select_unanswered(screen, page, avoid=(iid,))
    assert page.get_attribute("#fb-result", "data-inspection-id") == other
    assert page.text_content("#fb-result") == ""
    assert page.locator("#fb-buttons .chosen").count() == 0
    page.locator(f"#thumbs .thumb[data-inspection-id='{iid}']").click()
    page.wait_for_selector(f"#fb-result[data-kind=not_defect][data-inspection-id='{iid}']")
    page.click("#back-live")


def test_undo_goes_when_its_time_is_up(screen: Screen) -> None:
    page = screen.page
    page.wait_for_function("() => document.querySelectorAll('#thumbs .thumb').length >= 2")
    iid = _select_unanswered(screen, page)  # tapped: it stays up longer than the undo time
    page.click("#fb-confirm")
    page.wait_for_selector(f"#fb-result[data-kind=confirm_defect][data-inspection-id='{iid}']")
    assert page.is_visible("#fb-undo")
    left = re.search(r"\d+", page.text_content("#fb-undo") or "")
    assert left and 1 <= int(left.group()) <= UNDO_S  # counts down from the station's time left
    page.wait_for_selector("#fb-undo", state="hidden", timeout=(UNDO_S + 10) * 1000)
    # gone with the time, not with the part: the answer still shows as given
    assert page.get_attribute("#feedback", "data-inspection-id") == iid
    assert "已记录" in (page.text_content("#fb-result") or "")
    # and the station no longer takes it back either (after a round trip's worth: the
    # screen counts from the station's time left less the round trip of the answer)
    page.wait_for_timeout(300)
    fid = screen.sql("SELECT id FROM feedback WHERE inspection_id = ?", (iid,))[0][0]
    r = httpx.delete(
        f"{screen.served.url}/api/inspections/{iid}/feedback/{fid}",
        headers={"Authorization": f"Bearer {screen.token}"},
    )
    assert r.status_code == 409, r.text
    page.click("#back-live")


#: the part under the finger, as the page recorded it at pointerdown
PRESSED = """() => { const f = document.getElementById('feedback');
  return { id: f.dataset.pressId, ok: f.dataset.pressOk,
           shown: document.getElementById('verdict').dataset.inspectionId }; }"""


def test_a_tap_lands_on_the_part_it_came_down_on(screen: Screen) -> None:
    """A finger on the buttons holds the part: the line goes on past the hold and the
    answer still goes to the part the finger came down on. A part changed under the
    finger (here: another thumbnail chosen by script meanwhile) gets no answer: the tap
    was not meant for it. Read back with SQL."""
    page = screen.page
    page.wait_for_selector("#back-live", state="hidden")  # the line's parts come up
    since = screen.sql("SELECT COALESCE(MAX(id), 0) FROM feedback")[0][0]
    b = page.locator("#fb-not").bounding_box()
    page.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2)
    refused = []
    for _ in range(20):
        page.wait_for_selector("#fb-not:enabled")
        page.mouse.down()
        pressed = page.evaluate(PRESSED)
        if pressed["ok"] == "1":
            break
        # the part had just changed: the tap is refused and says so; nothing is sent
        page.mouse.up()
        page.wait_for_selector("#fb-result.bad")
        refused.append(pressed["id"])
        page.wait_for_timeout(SETTLE_MS)
    assert pressed["ok"] == "1" and pressed["id"] == pressed["shown"], pressed
    part = pressed["id"]
    seq = screen.sql("SELECT seq FROM inspections WHERE id = ?", (part,))[0][0]
    samples = _sample(page, 30, every_ms=100)  # the finger stays down, past a hold
    assert samples[-1]["t"] - samples[0]["t"] > 1000 * HOLD_S
    assert {x["verdict"] for x in samples} == {part}
    assert {x["feedback"] for x in samples} == {part}
    newer = screen.sql("SELECT COUNT(*) FROM inspections WHERE seq > ?", (seq,))[0][0]
    assert newer >= 2, "the line did not go on while the finger was down"
    page.mouse.up()  # the click: the answer goes to the part it came down on
    page.wait_for_selector(f"#fb-result[data-kind=not_defect][data-inspection-id='{part}']")
    rows = screen.sql("SELECT inspection_id, kind FROM feedback WHERE id > ?", (since,))
    assert rows == [(part, "not_defect")], (rows, refused)

    # a swap under the finger: another part comes up between pointerdown and click
    page.click("#back-live")
    page.wait_for_function("() => document.querySelectorAll('#thumbs .thumb').length >= 3")
    since = screen.sql("SELECT MAX(id) FROM feedback")[0][0]
    page.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2)
    page.mouse.down()
    down_on = page.evaluate(PRESSED)["id"]
    other = _unanswered(screen, page, avoid=(part, down_on))
    page.evaluate(
        "id => document.querySelector(`#thumbs .thumb[data-inspection-id='${id}']`).click()",
        other,
    )
    page.wait_for_function(
        "id => document.getElementById('feedback').dataset.inspectionId === id", arg=other
    )
    page.mouse.up()
    page.wait_for_selector(f"#fb-result.bad[data-inspection-id='{other}']")  # "tap again"
    assert screen.sql("SELECT inspection_id FROM feedback WHERE id > ?", (since,)) == []
    # tapped again, on the part now shown: that answer counts
    page.wait_for_timeout(SETTLE_MS)
    page.click("#fb-not")
    page.wait_for_selector(f"#fb-result[data-kind=not_defect][data-inspection-id='{other}']")
    rows = screen.sql("SELECT inspection_id, kind FROM feedback WHERE id > ?", (since,))
    assert rows == [(other, "not_defect")]
    page.click("#back-live")


def test_fail_beeps_and_flashes_when_asked_and_the_screen_remembers(screen: Screen) -> None:
    page = screen.page
    screen.open("?sound=1&flash=1")
    assert page.get_attribute("body", "data-sound") == "1"
    page.wait_for_function(
        "() => +(document.body.dataset.flashes || 0) >= 2 && +(document.body.dataset.beeps || 0) >= 2"
    )
    # a FAIL alarms when it arrives, not when it comes up large: with a tapped part held
    # up (nothing else comes up large), arriving FAILs still beep and flash
    page.wait_for_function("() => document.querySelectorAll('#thumbs .thumb').length >= 2")
    held = _select(page, 1)
    flashes = int(page.get_attribute("body", "data-flashes") or 0)
    page.wait_for_function(
        "n => +(document.body.dataset.flashes || 0) >= n + 2", arg=flashes, polling=50
    )
    assert page.get_attribute("#verdict", "data-inspection-id") == held
    # more defects came than the screen could show large: the ones it had to skip are
    # counted where the waiting ones are
    page.wait_for_function(
        "() => +(document.getElementById('pending').dataset.skipped || 0) > 0", timeout=60_000
    )
    assert "未显示" in (page.text_content("#pending") or "")
    page.click("#back-live")
    screen.open()  # no parameters: this screen remembers
    assert page.get_attribute("body", "data-flash") == "1"
    assert page.get_attribute("body", "data-sound") == "1"
    page.wait_for_function("() => +(document.body.dataset.flashes || 0) >= 1")
    screen.open("?sound=0&flash=0")
    screen.open()
    assert page.get_attribute("body", "data-flash") == "0"
    assert page.get_attribute("body", "data-sound") == "0"
    # FAILs come up, and nothing beeps or flashes
    page.wait_for_function(
        "() => { window.__fails = window.__fails || new Set();"
        " const v = document.getElementById('verdict');"
        " if (v.dataset.verdict === 'FAIL') window.__fails.add(v.dataset.inspectionId);"
        " return window.__fails.size >= 2; }",
        polling=50,
    )
    assert page.get_attribute("body", "data-flashes") is None
    assert page.get_attribute("body", "data-beeps") is None


BOXES = ["#top", "#stage", "#verdict", "#verdict-reason", "#feedback", "#flow", "#defects"]


@pytest.mark.parametrize("size", [(1920, 1080), (1024, 768), (1280, 800)])
@pytest.mark.parametrize("lang", ["zh", "en"])
def test_the_verdict_is_big_and_nothing_overlaps(
    screen: Screen, size: tuple[int, int], lang: str
) -> None:
    page = screen.page
    w, h = size
    page.set_viewport_size({"width": w, "height": h})
    try:
        screen.open(lang=lang)
        # the longest word of each language (不合格 / REVIEW): its part, tapped in the strip
        word = "FAIL" if lang == "zh" else "REVIEW"
        page.wait_for_selector(f"#thumbs .thumb.v-{word}")
        page.dispatch_event("#thumbs", "pointerdown")
        page.locator(f"#thumbs .thumb.v-{word}").first.click()
        page.wait_for_function(
            "v => document.getElementById('verdict').dataset.verdict === v", arg=word
        )
        m: dict[str, Any] = page.evaluate(
            "boxes => { const r = (s) => { const b = document.querySelector(s)"
            ".getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; };"
            " const w = document.getElementById('verdict-word');"
            " return { boxes: boxes.map(r), word: r('#verdict-word'),"
            " font: parseFloat(getComputedStyle(w).fontSize),"
            " fits: w.scrollWidth <= w.clientWidth,"
            " buttons: [...document.querySelectorAll('#fb-buttons button')].map("
            "b => b.scrollHeight <= b.clientHeight && b.scrollWidth <= b.clientWidth) }; }",
            BOXES,
        )
        page.click("#back-live")
    finally:
        page.set_viewport_size({"width": 1280, "height": 800})
    block = m["boxes"][BOXES.index("#verdict")]
    block_h = block[3] - block[1]
    word_h = m["word"][3] - m["word"][1]
    print(
        f"{lang} {w}x{h}: verdict block {block_h:.0f} px ({100 * block_h / h:.1f} % of the "
        f"height), word {word_h:.0f} px tall, font {m['font']:.0f} px"
    )
    assert m["fits"], "the verdict word is cut off"
    assert all(m["buttons"]), "a feedback button's label does not fit"
    if h >= 1080:
        assert block_h >= 0.15 * h
    if (w, h) == (1024, 768):  # the smallest screen a line PC has: still legible from afar
        assert block_h >= 0.14 * h and word_h >= 64, (block_h, word_h)
    for i, a in enumerate(m["boxes"]):
        assert a[0] >= 0 and a[1] >= 0 and a[2] <= w + 0.5 and a[3] <= h + 0.5, (BOXES[i], a)
        for j, b in enumerate(m["boxes"][i + 1 :], i + 1):
            overlap = (
                min(a[2], b[2]) - max(a[0], b[0]) > 0.5 and min(a[3], b[3]) - max(a[1], b[1]) > 0.5
            )
            assert not overlap, (BOXES[i], a, BOXES[j], b)
