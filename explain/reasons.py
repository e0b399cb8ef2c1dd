"""Plain-language reasons in Simplified Chinese and English, from ranked contributions.

`bid_reasons` reads a bid decomposition (explain.bid_units.decompose_bid) and
says the top steps in words: "出价上调 0.35 元:近 1 小时转化率 4.2% 高于平均".
`drivers_text` turns a ranked change (explain.analysis.diff_windows / diff_steps)
into the one line the guard's alert quotes: "竞品价格指数 −0.31,人群包 送礼 −0.12".
Pure functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from explain.artifacts import FeatureSpec
from explain.bid_units import Step

LANGS = ("zh", "en")
MINUS = "\u2212"  # a real minus sign reads better than a hyphen in alerts


def _check_lang(lang: str) -> None:
    if lang not in LANGS:
        raise ValueError(f"lang={lang!r}: must be one of {LANGS}")


def _signed(value: float, decimals: int = 2) -> str:
    text = f"{abs(value):.{decimals}f}"
    return f"+{text}" if value >= 0 else f"{MINUS}{text}"


def _shown_value(spec: FeatureSpec, value: float, lang: str) -> str:
    level = spec.level(value)
    if level is not None:
        return level
    number = f"{value:.4g}"
    unit = spec.unit(lang)
    return f"{number}{unit}" if unit in ("%", "‰") or lang == "zh" else f"{number} {unit}".rstrip()


def _move(step: Step, lang: str, amounts: bool) -> str:
    """"出价上调 0.35 元" / "Bid raised by ¥0.35"; without amounts only the direction (words, not contributions)."""
    if lang == "zh":
        move = "上调" if step.value > 0 else "下调"
        return f"出价{move} {abs(step.value):.2f} 元" if amounts else f"出价{move}"
    move = "raised" if step.value > 0 else "lowered"
    return f"Bid {move} by ¥{abs(step.value):.2f}" if amounts else f"Bid {move}"


def _feature_reason(step: Step, spec: FeatureSpec, lang: str, typical: float | None, amounts: bool = True) -> str:
    value = _shown_value(spec, step.feature_value, lang)
    if typical is None:
        compare_zh = "拉高" if step.value > 0 else "拉低"
        compare_en = "pushes it up" if step.value > 0 else "pulls it down"
    else:
        above = step.feature_value > typical
        compare_zh = "高于平均" if above else "低于平均"
        compare_en = "above average" if above else "below average"
    if lang == "zh":
        return f"{_move(step, lang, amounts)}:{spec.display_zh} {value},{compare_zh}"
    return f"{_move(step, lang, amounts)}: {spec.display_en} is {value}, {compare_en}"


def _policy_reason(step: Step, lang: str, amounts: bool = True) -> str:
    return f"{_move(step, lang, amounts)}{':' if lang == 'zh' else ': '}{step.label(lang)}"


def bid_reasons(steps: Sequence[Step], features: Sequence[FeatureSpec], lang: str, *, top: int = 3,
                typical_values: Mapping[str, float] | None = None, min_abs: float = 0.005,
                amounts: bool = True) -> list[str]:
    """The `top` largest steps (features, pacing, caps, rule pool, override) as sentences.

    `typical_values` (e.g. training means by feature name) turns "pushes it up" into
    "above average". Steps smaller than `min_abs` yuan are not worth a sentence.
    `amounts=False` leaves out the yuan each step moves the bid: the reasons in words
    for a person who may not see the raw contributions (control.permissions).
    """
    _check_lang(lang)
    specs = {f.name: f for f in features}
    candidates = [s for s in steps if s.kind not in ("base", "rounding") and abs(s.value) >= min_abs]
    candidates.sort(key=lambda s: -abs(s.value))
    out = []
    for step in candidates[:top]:
        if step.kind == "feature":
            typical = (typical_values or {}).get(step.name)
            out.append(_feature_reason(step, specs[step.name], lang, typical, amounts))
        else:
            out.append(_policy_reason(step, lang, amounts))
    return out


def drivers_text(ranked: pd.DataFrame, lang: str, *, top: int = 3, column: str = "delta",
                 decimals: int = 2) -> str:
    """'label −0.31, label −0.12, ...' from a ranked frame (label_zh/label_en and `column`)."""
    _check_lang(lang)
    label = "label_zh" if lang == "zh" else "label_en"
    sep = "," if lang == "zh" else ", "
    rows = ranked[ranked[column] != 0].head(top)
    return sep.join(f"{r[label]} {_signed(r[column], decimals)}" for _, r in rows.iterrows())
