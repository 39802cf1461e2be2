"""The promotion gate's pure half: every failed condition named with its own numbers,
and the feedback rule, against a tally written out here from the rule's words."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kanjian.station.shadow.config import ShadowConfig
from kanjian.station.shadow.gate import feedback_tally, is_wrong, judge_gate
from tests.support.station_config import parse, station_config

VERDICTS = ("PASS", "FAIL", "REVIEW", "ERROR")
KINDS = ("confirm_defect", "not_defect", "wrong_class")


def test_the_feedback_rule_in_words() -> None:
    table = {(v, k): is_wrong(v, k) for v in VERDICTS for k in KINDS}
    assert [vk for vk, w in table.items() if w] == [
        ("PASS", "confirm_defect"),  # a missed defect
        ("PASS", "wrong_class"),  # a defect of another class: still a defect
        ("FAIL", "not_defect"),  # a false alarm
        ("REVIEW", "not_defect"),
        ("ERROR", "confirm_defect"),  # no judgement is never right
        ("ERROR", "not_defect"),
        ("ERROR", "wrong_class"),
    ]


@given(
    rows=st.lists(
        st.tuples(st.sampled_from(VERDICTS[:3]), st.sampled_from(VERDICTS), st.sampled_from(KINDS)),
        max_size=30,
    ),
    frames=st.integers(0, 500),
    agree_share=st.floats(0, 1),
    min_frames=st.integers(0, 400),
    min_agreement=st.floats(0, 1),
    no_worse=st.booleans(),
)
def test_every_failed_condition_is_named_with_its_numbers(
    rows: list[tuple[str, str, str]],
    frames: int,
    agree_share: float,
    min_frames: int,
    min_agreement: float,
    no_worse: bool,
) -> None:
    agreed = int(frames * agree_share)
    fb = feedback_tally(rows)
    # wrong: a defect answered and PASS said, or no defect answered and FAIL / REVIEW said;
    # an ERROR always
    a_wrong = sum((a == "PASS") == (k != "not_defect") for a, _, k in rows)
    s_wrong = sum(s == "ERROR" or (s == "PASS") == (k != "not_defect") for _, s, k in rows)
    assert (fb.frames, fb.active_wrong, fb.shadow_wrong) == (len(rows), a_wrong, s_wrong)
    cfg = ShadowConfig(
        promote_min_frames=min_frames,
        promote_min_agreement=min_agreement,
        promote_no_worse_on_feedback=no_worse,
    )
    check = judge_gate(frames, agreed, fb, cfg)
    want = []
    if frames < min_frames:
        want.append(f"frames seen {frames} < {min_frames}")
    if min_agreement > 0 and frames == 0:
        want.append("agreement unknown (no frames judged)")
    elif min_agreement > 0 and agreed / frames < min_agreement:
        want.append(f"agreement {agreed / frames:.4f} < {min_agreement:g} ({agreed} of {frames}")
    if no_worse and s_wrong > a_wrong:
        want.append(
            f"wrong on operator feedback {s_wrong} > active model's {a_wrong} "
            f"(of {len(rows)} answered frames)"
        )
    assert len(check.failed) == len(want) and check.passed == (not want)
    for got, words in zip(check.failed, want, strict=True):
        assert got.startswith(words), (got, words)


def test_the_gate_is_configured_in_station_yaml_and_a_wrong_key_is_named(tmp_path: Path) -> None:
    from kanjian.station.config import ConfigError

    data = tmp_path / "data"
    defaults = parse(station_config(data)).shadow
    assert (defaults.promote_min_frames, defaults.promote_min_agreement) == (200, 0.95)
    assert defaults.promote_no_worse_on_feedback and defaults.judge_timeout_s == 60
    got = parse(station_config(data, shadow={"promote_min_frames": 5})).shadow
    assert got.promote_min_frames == 5
    with pytest.raises(ConfigError) as e:
        parse(station_config(data, shadow={"promote_min_frame": 5}))
    assert "shadow.promote_min_frame" in str(e.value)
    with pytest.raises(ConfigError, match=r"shadow\.promote_min_agreement"):
        parse(station_config(data, shadow={"promote_min_agreement": 1.5}))
