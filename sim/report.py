"""Writing a stress report: JSON (the contract), CSV (by hour and by campaign) and a
self-contained HTML page with Altair charts (JavaScript inlined when vl-convert is
installed, so the page opens offline)."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import altair as alt
import pandas as pd


def report_json(report: dict) -> str:
    return json.dumps(report, ensure_ascii=False, indent=2, sort_keys=False) + "\n"


def hourly_frame(report: dict) -> pd.DataFrame:
    rows = [{"arm": arm, **h} for arm, data in report["arms"].items() for h in data["by_hour"]]
    return pd.DataFrame(rows, columns=["arm", "hour", "spend", "gmv", "roi", "profit"])


def campaign_frame(report: dict) -> pd.DataFrame:
    rows = [{"arm": arm, **c} for arm, data in report["arms"].items() for c in data["by_campaign"]]
    return pd.DataFrame(rows, columns=["arm", "campaign", "spend", "gmv", "roi", "profit", "clicks", "orders"])


def charts(report: dict) -> alt.VConcatChart:
    hourly = hourly_frame(report)
    floor = report["floor_roi"]
    roi = alt.Chart(hourly).mark_line(point=True).encode(
        x=alt.X("hour:O", title="hour 小时"), y=alt.Y("roi:Q", title="ROI (GMV / spend)"),
        color=alt.Color("arm:N", title="arm"), tooltip=["arm", "hour", "roi", "spend", "gmv"],
    ).properties(title="ROI by hour 分小时 ROI", width=640, height=220)
    floor_rule = alt.Chart(pd.DataFrame({"floor": [floor]})).mark_rule(strokeDash=[6, 4], color="red").encode(
        y="floor:Q")
    profit = alt.Chart(hourly).mark_bar().encode(
        x=alt.X("hour:O", title="hour 小时"), xOffset="arm:N", y=alt.Y("profit:Q", title="profit, yuan 利润(元)"),
        color="arm:N", tooltip=["arm", "hour", "profit"],
    ).properties(title="Profit by hour (GMV x margin - spend) 分小时利润", width=640, height=220)
    camp = campaign_frame(report)
    per_campaign = alt.Chart(camp).mark_point(filled=True).encode(
        x=alt.X("campaign:N", title="campaign 推广计划"), y=alt.Y("roi:Q", title="ROI"), color="arm:N",
        tooltip=["arm", "campaign", "roi", "spend", "gmv", "profit"],
    ).properties(title="ROI by campaign over the day 各计划全天 ROI", width=640, height=220)
    return alt.vconcat(roi + floor_rule, profit, per_campaign + floor_rule)


def _headline(report: dict) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(arm)}</td><td>{d['spend']:,.0f}</td><td>{d['gmv']:,.0f}</td>"
        f"<td>{d['roi'] if d['roi'] is not None else '-'}</td><td>{d['profit']:,.0f}</td>"
        f"<td>{d['campaigns_below_floor']}</td></tr>"
        for arm, d in report["arms"].items())
    loss = report["loss_avoided"]
    return (f"<h1>BidLens stress test 压力测试: {html.escape(report['scenario'])} (seed {report['seed']})</h1>"
            "<table border='1' cellpadding='4'><tr><th>arm</th><th>spend 消耗 (元)</th><th>GMV (元)</th>"
            "<th>ROI</th><th>profit 利润 (元)</th><th>campaigns below floor 低于底线计划数</th></tr>"
            f"{rows}</table><p>trips 熔断: {sum(t['kind'] == 'trip' for t in report['trips'])}, "
            f"false trips 误熔断: {report['false_trips']}, "
            f"failed probations 观察期失败: {report['probation_failures']}, "
            f"loss avoided 避免损失: {'-' if loss is None else f'{loss:,.0f} 元'}</p>")


def report_dir(data_dir: str | Path, scenario_name: str, seed: int) -> Path:
    """DATA_DIR/reports/stress-<name>-<seed>, the scenario's name made a slug (letters, digits, _ and -): a
    name such as "../../etc" from a scenario file stays a folder name inside the data folder."""
    slug = re.sub(r"[^\w-]+", "-", scenario_name).strip("-")[:64] or "scenario"
    return Path(data_dir).resolve() / "reports" / f"stress-{slug}-{int(seed)}"
BREAKER_COLUMNS = ("guard", "action", "interceptions", "restores", "announced_again", "loss_avoided",
                   "loss_avoided_tripped", "method", "campaigns")


def breakers_frame(report: dict) -> pd.DataFrame:
    """The per-breaker section (app.stress_breakers) as rows; empty without one."""
    rows = [{**b, "campaigns": " ".join(b["campaigns"])} for b in report.get("breakers", [])]
    return pd.DataFrame(rows, columns=list(BREAKER_COLUMNS))


def _breakers_html(report: dict) -> str:
    frame = breakers_frame(report)
    if frame.empty:
        return ""
    cells = "".join(
        f"<tr><td>{html.escape(r.guard)}</td><td>{html.escape(r.action)}</td><td>{r.interceptions}</td>"
        f"<td>{r.restores}</td><td>{r.loss_avoided:,.0f}</td><td>{html.escape(r.method)}</td>"
        f"<td>{html.escape(r.campaigns)}</td></tr>" for r in frame.itertuples())
    return ("<h2>Breakers 熔断器 (each alone against the model arm 各自单独对比模型组)</h2>"
            "<table border='1' cellpadding='4'><tr><th>breaker 熔断器</th><th>action 动作</th>"
            "<th>interceptions 拦截</th><th>restores 恢复</th><th>loss avoided 避免损失 (元)</th>"
            f"<th>method 方法</th><th>campaigns 计划</th></tr>{cells}</table>")


def write_report(report: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write report.json, by_hour.csv, by_campaign.csv, breakers.csv (with a per-breaker section) and
    report.html; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "by_hour_csv": out / "by_hour.csv",
             "by_campaign_csv": out / "by_campaign.csv", "html": out / "report.html"}
    paths["json"].write_text(report_json(report), encoding="utf-8")
    hourly_frame(report).to_csv(paths["by_hour_csv"], index=False)
    campaign_frame(report).to_csv(paths["by_campaign_csv"], index=False)
    if report.get("breakers"):
        paths["breakers_csv"] = out / "breakers.csv"
        breakers_frame(report).to_csv(paths["breakers_csv"], index=False)
    paths["html"].write_text(report_html(report), encoding="utf-8")
    return paths


def standalone_html(chart: alt.TopLevelMixin, head: str) -> str:
    """An Altair chart's page with `head` (HTML) before it, the chart libraries inlined when vl-convert is
    installed, so the page opens offline."""
    try:
        import vl_convert  # noqa: F401  (inlining the chart libraries needs it)
        page = chart.to_html(inline=True)
    except ImportError:
        page = chart.to_html()  # loads Vega from a CDN: needs a network to draw
    return page.replace("<body>", '<body>\n<meta charset="utf-8">' + head, 1)


def report_html(report: dict) -> str:
    """The stress report as one self-contained page: the arms, the breakers, the charts."""
    return standalone_html(charts(report), _headline(report) + _breakers_html(report))
