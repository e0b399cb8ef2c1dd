"""The gate report drawn: Altair charts from the report document (app.gate) and a self-contained HTML
page in both languages, stored with the version (model_gates.html) and shown on the launch page."""

from __future__ import annotations

import html

import altair as alt
import pandas as pd

from control.gate import Reason, reason_text
from explain.charts import importance_bars

WORDS = {
    "zh": {"roi": "各场景 ROI（同一随机种子）", "arm": "组", "scenario": "场景", "reliability": "可靠性图：预测 vs 实际每点击价值（元）",
           "predicted": "预测每点击价值（元）", "realised": "实际每点击价值（元）", "ratio": "出价 / (价值 / 底线)",
           "bids": "出价数", "objective": "出价相对 价值/底线 的分布（>1：按模型自己的预测 ROI 低于底线）",
           "differs": "与在线版本差异最大的特征（平均贡献，元/点击）", "delta": "平均贡献变化（元/点击）"},
    "en": {"roi": "ROI by scenario (same seeds)", "arm": "arm", "scenario": "scenario",
           "reliability": "Reliability: predicted vs realised value per click (yuan)",
           "predicted": "predicted value per click (yuan)", "realised": "realised value per click (yuan)",
           "ratio": "bid / (value / floor)", "bids": "bids",
           "objective": "Bids against value / floor (> 1: its own predicted ROI at the bid is below the floor)",
           "differs": "Features differing most from the serving version (mean contribution, yuan per click)",
           "delta": "change of mean contribution (yuan per click)"},
}
ARMS = {"zh": {"version": "本版本", "serving": "在线版本", "pool": "人工规则池"},
        "en": {"version": "this version", "serving": "serving version", "pool": "manual rule pool"}}
VERDICTS = {"zh": {"pass": "通过", "warn": "警告", "fail": "不通过"}, "en": {"pass": "pass", "warn": "warn", "fail": "fail"}}


def scenario_frame(report: dict, lang: str = "en") -> pd.DataFrame:
    rows = [{"scenario": f"{s['scenario']} #{s['seed']}", "arm": ARMS[lang][role], "roi": arm["roi"],
             "profit": arm["profit"], "campaigns_below_floor": arm["campaigns_below_floor"], "floor": s["floor"]}
            for s in report["scenarios"] for role, arm in s["arms"].items()]
    return pd.DataFrame(rows, columns=["scenario", "arm", "roi", "profit", "campaigns_below_floor", "floor"])


def charts(report: dict, lang: str = "en") -> list[alt.Chart]:
    """The report's charts: ROI per scenario and arm against the floor, the reliability diagram, the
    bids against value / floor, the drivers and what differs from the serving version."""
    w = WORDS[lang]
    out = []
    scen = scenario_frame(report, lang)
    if len(scen):
        bars = alt.Chart(scen).mark_bar().encode(
            x=alt.X("scenario:N", title=w["scenario"]), xOffset="arm:N", y=alt.Y("roi:Q", title="ROI"),
            color=alt.Color("arm:N", title=w["arm"]), tooltip=["scenario", "arm", "roi", "profit",
                                                              "campaigns_below_floor"])
        floor = alt.Chart(scen).mark_rule(strokeDash=[6, 4], color="red").encode(y="mean(floor):Q")
        out.append((bars + floor).properties(title=w["roi"], width=560, height=220))
    reliability = pd.DataFrame((report.get("calibration") or {}).get("reliability") or [])
    if len(reliability):
        top = float(max(reliability["predicted"].max(), reliability["realised"].max()))
        points = alt.Chart(reliability).mark_line(point=True).encode(
            x=alt.X("predicted:Q", title=w["predicted"]), y=alt.Y("realised:Q", title=w["realised"]),
            tooltip=["bin", "predicted", "realised", "clicks"])
        diagonal = alt.Chart(pd.DataFrame({"x": [0.0, top], "y": [0.0, top]})).mark_line(
            strokeDash=[4, 4], color="gray").encode(x="x:Q", y="y:Q")
        out.append((diagonal + points).properties(title=w["reliability"], width=360, height=300))
    histogram = ((report.get("objective") or {}).get("histogram")) or {}
    if histogram.get("bins"):
        frame = pd.DataFrame({"ratio": histogram["bins"], "bids": histogram["bids"]})
        out.append(alt.Chart(frame).mark_bar().encode(
            x=alt.X("ratio:N", sort=None, title=w["ratio"]), y=alt.Y("bids:Q", title=w["bids"]),
            tooltip=["ratio", "bids"]).properties(title=w["objective"], width=480, height=200))
    explanation = report.get("explanation") or {}
    if explanation.get("importance"):
        out.append(importance_bars(pd.DataFrame(explanation["importance"]), lang).properties(width=420))
    if explanation.get("differs"):
        frame = pd.DataFrame(explanation["differs"])
        frame = frame.assign(label=frame["label_zh" if lang == "zh" else "label_en"])
        out.append(alt.Chart(frame).mark_bar().encode(
            y=alt.Y("label:N", sort=alt.SortField("rank"), title=None), x=alt.X("delta:Q", title=w["delta"]),
            tooltip=["label", "before", "after", "delta"]).properties(title=w["differs"], width=420))
    return out


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, border=1, na_rep="-", float_format=lambda x: f"{x:,.4g}")


def render_html(report: dict) -> str:
    """The whole report as one page, Chinese and English, charts inlined when vl-convert is installed."""
    parts = [f"<h1>BidLens 上线闸门 Launch gate: {html.escape(report['model_version'])}</h1>"]
    for lang in ("zh", "en"):
        parts.append(f"<h2>{VERDICTS[lang][report['verdict']]}</h2><ul>" + "".join(
            f"<li>{html.escape(reason_text(Reason.from_json(r), lang))}</li>" for r in report["reasons"]) + "</ul>")
    parts.append(f"<p>serving 在线版本: {html.escape(str(report.get('serving_version')))} · seeds 种子: "
                 f"{report['seeds']} · minutes 分钟: {report['minutes']} · {report['seconds']} s</p>")
    if report.get("stress_skipped"):
        parts.append(f"<p>stress 压力测试: {html.escape(report['stress_skipped'])}</p>")
    scen = scenario_frame(report)
    if len(scen):
        parts.append(_table(scen))
    cal = report.get("calibration") or {}
    if cal.get("k") is not None:
        parts.append(f"<p>calibration 校准 k = {cal['k']:.3f} ({cal['low']:.3f}-{cal['high']:.3f}, "
                     f"{cal['orders']:.0f} effective orders 有效订单), rows {cal['rows']}</p>")
        parts.append(_table(pd.DataFrame(cal["by_campaign"])))
    objective = report.get("objective")
    if objective:
        parts.append(f"<p>objective 目标检查: {objective['share_below_floor']:.1%} of {objective['bids']:,} bids "
                     f"(spend {objective['spend_share_below_floor']:.1%}) at a predicted ROI below the floor</p>")
    charts_html = ""
    drawn = charts(report, "en")
    if drawn:
        chart = alt.vconcat(*drawn)
        try:
            import vl_convert  # noqa: F401  (inlining the chart libraries needs it)
            charts_html = chart.to_html(inline=True)
        except ImportError:
            charts_html = chart.to_html()
    body = "\n".join(parts)
    if charts_html:
        return charts_html.replace("<body>", "<body>\n" + body, 1)
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>{body}</body></html>"
