"""Plain-language reasons in Simplified Chinese and English, from ranked contributions.

`bid_reasons` reads a bid decomposition (explain.bid_units.decompose_bid) and
says the top steps in words: "出价上调 0.35 元：近期转化率 4.2%，高于平均".
`drivers_text` turns a ranked change (explain.analysis.diff_windows / diff_steps)
into one line: "竞品价格指数 −0.31，人群包 −0.12".

Amounts are yuan at two decimals; a feature's value is shown at sensible
precision with its unit (a feature whose unit is "%" holds a share: 0.042 reads
4.2%); a categorical feature's level by its name in the language
(`level_names`, e.g. the catalogue's audience package names), never a bare code
the reader cannot place. Chinese text uses Chinese punctuation. Pure functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from explain.artifacts import FeatureSpec
from explain.bid_units import Step

LANGS = ("zh", "en")
MINUS = "\u2212"  # a real minus sign reads better than a hyphen in alerts
# Categorical levels by name: feature name -> level code -> (name in Chinese, name in English).
LevelNames = Mapping[str, Mapping[str, tuple[str, str]]]


def _check_lang(lang: str) -> None:
    if lang not in LANGS:
        raise ValueError(f"lang={lang!r}: must be one of {LANGS}")


def _signed(value: float, decimals: int = 2) -> str:
    text = f"{abs(value):.{decimals}f}"
    return f"+{text}" if value >= 0 else f"{MINUS}{text}"


def _number(value: float) -> str:
    """Sensible precision: 1,234 · 56.8 · 5.23 · 0.042 (three significant digits below 100)."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def shown_value(spec: FeatureSpec, value: float | None, lang: str, level_names: LevelNames | None = None) -> str:
    """A feature's value as a person reads it; "" when there is none to show (no value, or a
    categorical level without a name in `level_names`)."""
    if value is None or value != value:
        return ""
    level = spec.level(value)
    if level is not None:
        names = (level_names or {}).get(spec.name, {}).get(level)
        return "" if names is None else names[0 if lang == "zh" else 1]
    unit = spec.unit(lang)
    if unit == "%":
        return f"{_number(value * 100)}%"
    if unit == "‰":
        return f"{_number(value * 1000)}‰"
    number = _number(value)
    return f"{number} {unit}".rstrip()


def _move(step: Step, lang: str, amounts: bool) -> str:
    """"出价上调 0.35 元" / "Bid raised by ¥0.35"; without amounts only the direction (words, not contributions)."""
    if lang == "zh":
        move = "上调" if step.value > 0 else "下调"
        return f"出价{move} {abs(step.value):.2f} 元" if amounts else f"出价{move}"
    move = "raised" if step.value > 0 else "lowered"
    return f"Bid {move} by ¥{abs(step.value):.2f}" if amounts else f"Bid {move}"


def _feature_reason(step: Step, spec: FeatureSpec, lang: str, typical: float | None,
                    level_names: LevelNames | None, amounts: bool) -> str:
    value = shown_value(spec, step.feature_value, lang, level_names)
    move = _move(step, lang, amounts)
    if lang == "zh":
        if typical is not None and spec.categorical_levels is None:
            compare = "高于平均" if step.feature_value > typical else "低于平均"
            return f"{move}：{spec.display_zh} {value}，{compare}"
        said = f"{spec.display_zh} {value}" if value else spec.display_zh
        return f"{move}：{said}"
    if typical is not None and spec.categorical_levels is None:
        compare = "above average" if step.feature_value > typical else "below average"
        return f"{move}: {spec.display_en} is {value}, {compare}"
    said = f"{spec.display_en} is {value}" if value else spec.display_en
    return f"{move}: {said}"


def _policy_reason(step: Step, lang: str, amounts: bool) -> str:
    if step.value == 0:  # a guard's pause: the bid stands, the package is off
        return step.label(lang)
    return f"{_move(step, lang, amounts)}{'：' if lang == 'zh' else ': '}{step.label(lang)}"


def bid_reasons(steps: Sequence[Step], features: Sequence[FeatureSpec], lang: str, *, top: int = 3,
                typical_values: Mapping[str, float] | None = None, min_abs: float = 0.005,
                level_names: LevelNames | None = None, amounts: bool = True) -> list[str]:
    """The `top` largest steps (features, pacing, caps, rule pool, guard, override) as sentences.

    `typical_values` (e.g. training means by feature name) adds "above / below average" to a numeric
    feature's reason. Steps smaller than `min_abs` yuan are not worth a sentence, except a guard's
    pause, which says why the package is off. `amounts=False` leaves out the yuan each step moves the
    bid: the reasons in words for a person who may not see the raw contributions (control.permissions).
    """
    _check_lang(lang)
    specs = {f.name: f for f in features}
    candidates = [s for s in steps if s.kind not in ("base", "rounding")
                  and (abs(s.value) >= min_abs or s.kind == "guard")]
    candidates.sort(key=lambda s: (s.kind != "guard", -abs(s.value)))
    out = []
    for step in candidates[:top]:
        if step.kind == "feature":
            typical = (typical_values or {}).get(step.name)
            out.append(_feature_reason(step, specs[step.name], lang, typical, level_names, amounts))
        else:
            out.append(_policy_reason(step, lang, amounts))
    return out


def drivers_text(ranked: pd.DataFrame, lang: str, *, top: int = 3, column: str = "delta",
                 decimals: int = 2) -> str:
    """'label −0.31，label −0.12 …' from a ranked frame (label_zh/label_en and `column`)."""
    _check_lang(lang)
    label = "label_zh" if lang == "zh" else "label_en"
    sep = "，" if lang == "zh" else ", "
    rows = ranked[ranked[column] != 0].head(top)
    return sep.join(f"{r[label]} {_signed(r[column], decimals)}" for _, r in rows.iterrows())
