"""Altair charts of explanations, drawn from the tidy frames the compute functions return.

Compute lives in explain.bid_units / explain.analysis; these functions only
draw. shap's own plots need matplotlib and global state, so none are used.
Sampled frames (strip, dependence) carry `sample_size` / `total_rows`, and the
chart title says so.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

TITLES = {
    "waterfall": {"zh": "出价分解（元/点击）", "en": "Bid breakdown (yuan per click)"},
    "strip": {"zh": "各特征贡献分布", "en": "Contributions by feature"},
    "dependence": {"zh": "特征取值与贡献", "en": "Feature value vs contribution"},
    "drift": {"zh": "归因漂移（参考窗口 → 当前）", "en": "Attribution drift (reference → now)"},
    "importance": {"zh": "平均绝对贡献", "en": "Mean |contribution|"},
}
AXES = {
    "contribution": {"zh": "贡献（元/点击）", "en": "contribution (yuan per click)"},
    "value": {"zh": "特征取值", "en": "feature value"},
    "step": {"zh": "步骤", "en": "step"},
    "bid": {"zh": "出价（元/点击）", "en": "bid (yuan per click)"},
    "shift": {"zh": "平均贡献变化", "en": "shift of mean contribution"},
    "value_pct": {"zh": "取值分位", "en": "value percentile"},
}


def _label(lang: str) -> str:
    return "label_zh" if lang == "zh" else "label_en"


def _sampled_title(kind: str, frame: pd.DataFrame, lang: str) -> str:
    title = TITLES[kind][lang]
    if len(frame) and frame["sample_size"].iloc[0] < frame["total_rows"].iloc[0]:
        n, total = int(frame["sample_size"].iloc[0]), int(frame["total_rows"].iloc[0])
        title += f"（抽样 {n:,} / {total:,}）" if lang == "zh" else f" (sample of {n:,} / {total:,})"
    return title


def waterfall(steps: pd.DataFrame, lang: str = "zh") -> alt.Chart:
    """Waterfall from `explain.bid_units.steps_frame`: one bar per step from start to total."""
    data = steps.assign(step=steps[_label(lang)], direction=(steps["value"] >= 0).map({True: "+", False: "-"}))
    # The feature's value as a person reads it when the caller gave it (`shown`), else the number.
    value = alt.Tooltip("shown:N", title=AXES["value"][lang]) if "shown" in data else "feature_value:Q"
    bars = alt.Chart(data).mark_bar().encode(
        y=alt.Y("step:N", sort=alt.SortField("order"), title=AXES["step"][lang],
                axis=alt.Axis(labelLimit=360)),  # steps carry their values: "最低出价 0.20 元"
        x=alt.X("start:Q", title=AXES["bid"][lang]),
        x2="total:Q",
        color=alt.Color("direction:N", scale=alt.Scale(domain=["+", "-"], range=["#d62728", "#2ca02c"]),
                        legend=None),
        tooltip=[alt.Tooltip("step:N", title=AXES["step"][lang]),
                 alt.Tooltip("value:Q", format="+.3f", title=AXES["contribution"][lang]),
                 alt.Tooltip("total:Q", format=".3f", title=AXES["bid"][lang]), value],
    )
    return bars.properties(title=TITLES["waterfall"][lang])


def strip(frame: pd.DataFrame, lang: str = "zh") -> alt.Chart:
    """Strip/beeswarm from `explain.analysis.strip_frame`: contribution per feature, coloured by value."""
    return alt.Chart(frame.assign(feature_label=frame[_label(lang)])).mark_circle(size=12, opacity=0.6).encode(
        y=alt.Y("feature_label:N", title=None, sort=None),
        x=alt.X("contribution:Q", title=AXES["contribution"][lang]),
        yOffset=alt.YOffset("jitter:Q"),
        color=alt.Color("value_pct:Q", scale=alt.Scale(scheme="redblue", reverse=True),
                        title=AXES["value_pct"][lang]),
        tooltip=["feature_label:N", "value:Q", alt.Tooltip("contribution:Q", format="+.4f"), "segment:N"],
    ).transform_calculate(jitter="random()").properties(title=_sampled_title("strip", frame, lang))


def dependence(frame: pd.DataFrame, lang: str = "zh") -> alt.Chart:
    """Dependence from `explain.analysis.dependence_frame`: value vs contribution, by segment."""
    label = frame[_label(lang)].iloc[0] if len(frame) else ""
    encoding = {
        "x": alt.X("value:Q", title=f"{label}（{AXES['value'][lang]}）" if lang == "zh"
                   else f"{label} ({AXES['value'][lang]})"),
        "y": alt.Y("contribution:Q", title=AXES["contribution"][lang]),
        "tooltip": ["value:Q", alt.Tooltip("contribution:Q", format="+.4f"), "segment:N"],
    }
    if len(frame) and frame["segment"].astype(str).ne("").any():
        encoding["color"] = alt.Color("segment:N")
    return alt.Chart(frame).mark_circle(size=14, opacity=0.6).encode(**encoding).properties(
        title=_sampled_title("dependence", frame, lang))


def drift(frame: pd.DataFrame, lang: str = "zh") -> alt.Chart:
    """Drift from `explain.analysis.attribution_drift`: shift per feature, drifted ones highlighted."""
    return alt.Chart(frame.assign(feature_label=frame[_label(lang)])).mark_bar().encode(
        y=alt.Y("feature_label:N", sort=alt.SortField("rank"), title=None),
        x=alt.X("shift:Q", title=AXES["shift"][lang]),
        color=alt.Color("drifted:N", scale=alt.Scale(domain=[False, True], range=["#9e9e9e", "#d62728"]),
                        legend=None),
        tooltip=["feature_label:N", alt.Tooltip("shift:Q", format="+.4f"), alt.Tooltip("z:Q", format=".1f"),
                 "n_ref:Q", "n_now:Q"],
    ).properties(title=TITLES["drift"][lang])


def importance_bars(frame: pd.DataFrame, lang: str = "zh") -> alt.Chart:
    """Global ranking from `explain.analysis.importance`."""
    return alt.Chart(frame.assign(feature_label=frame[_label(lang)])).mark_bar().encode(
        y=alt.Y("feature_label:N", sort=alt.SortField("rank"), title=None),
        x=alt.X("mean_abs:Q", title=TITLES["importance"][lang]),
        tooltip=["feature_label:N", alt.Tooltip("mean_abs:Q", format=".4f"), alt.Tooltip("mean:Q", format="+.4f")],
    ).properties(title=TITLES["importance"][lang])
