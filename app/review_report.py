"""The biweekly review (app.review) as a self-contained HTML page with Altair charts, in Chinese or English.

The chart libraries are inlined (vl-convert, sim.report.standalone_html), so the page
opens offline and can be mailed; the exporter's stamp goes on top (app.exports).
"""

from __future__ import annotations

import datetime as dt
import html

import altair as alt
import pandas as pd

from control.clock import PROMOTION_TZ
from sim.report import standalone_html

LANGS = ("zh", "en")
T = {
    "zh": {
        "title": "BidLens 双周复盘：{a} 至 {b}", "kpi": "联合 KPI", "spend": "花费（元）", "gmv": "GMV（元）",
        "roi": "ROI", "profit": "运营利润（元）", "share": "算法团队分担 {p:.0%}", "orders": "订单",
        "breakers": "熔断器：拦截与避免损失", "guard": "熔断器", "interceptions": "拦截次数", "restored": "已恢复",
        "open": "未恢复", "again": "再次提醒", "loss": "避免损失（元）", "methods": "估算方法",
        "overrides": "人工干预", "counts": "提交 {propose} · 批准 {approve} · 驳回 {reject} · 撤销 {revoke} · 到期 {expire}",
        "override": "干预", "campaign": "计划", "field": "字段", "value": "取值", "status": "状态",
        "served_roi": "实际 ROI", "model_roi": "模型 ROI（校准后）", "roi_effect": "ROI 差", "profit_effect": "利润影响（元）",
        "alerts": "告警响应（目标 {m} 分钟内确认）", "key": "范围", "n": "告警数", "acked": "已确认",
        "in_target": "目标内确认", "ack_med": "确认中位数（分钟）", "ack_p90": "确认 P90（分钟）",
        "res_med": "恢复中位数（分钟）", "res_p90": "恢复 P90（分钟）", "models": "服务过的模型版本",
        "version": "版本", "first": "首次", "last": "最后", "slots": "决策数", "calibration": "校准系数",
        "iteration": "迭代周期（天）：{days}；目标 {target} 天", "authorities": "决策方 ROI：模型 vs 人工规则池",
        "who": "决策方", "promotion": "大促", "all": "全部", "outside": "（大促外）", "none": "无",
        "decided.model": "模型", "decided.rule_pool": "人工规则池", "decided.override": "人工干预",
        "decided.guard": "守护动作", "decided.unknown": "未知",
    },
    "en": {
        "title": "BidLens biweekly review: {a} to {b}", "kpi": "Joint KPI", "spend": "Spend (yuan)", "gmv": "GMV (yuan)",
        "roi": "ROI", "profit": "Operations profit (yuan)", "share": "Algorithm team's {p:.0%} share", "orders": "Orders",
        "breakers": "Breakers: interceptions and loss avoided", "guard": "Breaker", "interceptions": "Interceptions",
        "restored": "Restored", "open": "Open", "again": "Announced again", "loss": "Loss avoided (yuan)",
        "methods": "Estimate", "overrides": "Overrides",
        "counts": "proposed {propose} · approved {approve} · rejected {reject} · revoked {revoke} · expired {expire}",
        "override": "Override", "campaign": "Campaign", "field": "Field", "value": "Value", "status": "Status",
        "served_roi": "Served ROI", "model_roi": "Model ROI (calibrated)", "roi_effect": "ROI difference",
        "profit_effect": "Profit effect (yuan)", "alerts": "Alert response (target: acknowledged within {m} min)",
        "key": "Scope", "n": "Alerts", "acked": "Acknowledged", "in_target": "Within target",
        "ack_med": "Ack median (min)", "ack_p90": "Ack p90 (min)", "res_med": "Resolve median (min)",
        "res_p90": "Resolve p90 (min)", "models": "Model versions that served", "version": "Version",
        "first": "First", "last": "Last", "slots": "Decisions", "calibration": "Calibration",
        "iteration": "Iteration cycle (days): {days}; target {target} days",
        "authorities": "ROI by authority: the model against the manual rule pool", "who": "Decided by",
        "promotion": "Promotion", "all": "all", "outside": "(outside promotions)", "none": "none",
        "decided.model": "model", "decided.rule_pool": "manual rule pool", "decided.override": "override",
        "decided.guard": "guard action", "decided.unknown": "unknown",
    },
}
METHOD_WORDS = {"zh": {"estimate": "估算：触发期间实际服务 vs 模型按触发时 ROI 与花费速率", "alert_only": "只告警：未改变流量，本身不计损失"},
                "en": {"estimate": "estimate: what served during the trip against the model at its ROI and spend "
                                   "rate of the trip's moment", "alert_only": "alert only: no traffic changed"}}


def _when(ts: int | None) -> str:
    return "" if ts is None else dt.datetime.fromtimestamp(ts, PROMOTION_TZ).strftime("%m-%d %H:%M")


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 60, 1)


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, border=1, na_rep="—", float_format=lambda x: f"{x:,.2f}")


def review_charts(review: dict, lang: str) -> alt.VConcatChart:
    """Loss avoided per breaker, ROI per authority, profit per campaign, calibration per model version."""
    t = T[lang]
    breakers = pd.DataFrame(review["breakers"]["by_guard"], columns=["guard", "interceptions", "loss_avoided"])
    authorities = pd.DataFrame(review["authorities"], columns=["decided_by", "roi", "spend", "profit"])
    authorities["who"] = authorities["decided_by"].map(lambda d: t.get(f"decided.{d}", d))
    campaigns = pd.DataFrame(review["kpi"]["by_campaign"], columns=["campaign_id", "profit", "roi"])
    models = pd.DataFrame(review["models"]["versions"], columns=["model_version", "calibration", "roi"])
    charts = [
        alt.Chart(breakers).mark_bar().encode(
            x=alt.X("guard:N", title=t["guard"]), y=alt.Y("loss_avoided:Q", title=t["loss"]),
            tooltip=["guard", "interceptions", "loss_avoided"]).properties(title=t["breakers"], width=560,
                                                                            height=200),
        alt.Chart(authorities).mark_bar().encode(
            x=alt.X("who:N", title=t["who"]), y=alt.Y("roi:Q", title=t["roi"]),
            tooltip=["who", "roi", "spend", "profit"]).properties(title=t["authorities"], width=560, height=200),
        alt.Chart(campaigns).mark_bar().encode(
            x=alt.X("campaign_id:N", title=t["campaign"], sort="-y"), y=alt.Y("profit:Q", title=t["profit"]),
            tooltip=["campaign_id", "profit", "roi"]).properties(title=t["kpi"], width=560, height=200),
        alt.Chart(models).mark_bar().encode(
            x=alt.X("model_version:N", title=t["version"]), y=alt.Y("calibration:Q", title=t["calibration"]),
            tooltip=["model_version", "calibration", "roi"]).properties(title=t["models"], width=560, height=200),
    ]
    return alt.vconcat(*charts)


def review_tables(review: dict, lang: str) -> dict[str, pd.DataFrame]:
    """The review's tables with headers in `lang` (the panel shows the same ones)."""
    t = T[lang]
    promo = lambda p: p or t["outside"]  # noqa: E731
    breakers = pd.DataFrame([{
        t["guard"]: r["guard"], t["interceptions"]: r["interceptions"], t["restored"]: r["restored"],
        t["open"]: r["open"], t["again"]: r["announced_again"], t["loss"]: r["loss_avoided"],
        t["methods"]: "; ".join(METHOD_WORDS[lang].get(m, m) for m in r["methods"])}
        for r in review["breakers"]["by_guard"]])
    by_promotion = pd.DataFrame([{
        t["guard"]: r["guard"], t["promotion"]: promo(r["promotion"]), t["interceptions"]: r["interceptions"],
        t["loss"]: r["loss_avoided"]} for r in review["breakers"]["by_promotion"]])
    by_campaign = pd.DataFrame([{
        t["guard"]: r["guard"], t["campaign"]: r["campaign_id"], t["interceptions"]: r["interceptions"],
        t["restored"]: r["restored"], t["again"]: r["announced_again"], t["loss"]: r["loss_avoided"]}
        for r in review["breakers"]["by_campaign"]])
    overrides = pd.DataFrame([{
        t["override"]: r["override_id"], t["campaign"]: r["campaign_id"], t["field"]: r["field"],
        t["value"]: r["value"], t["status"]: r["status"], t["served_roi"]: r["served_roi"],
        t["model_roi"]: r["model_roi_est"], t["roi_effect"]: r["roi_effect"], t["profit_effect"]: r["profit_effect"]}
        for r in review["overrides"]["rows"]])
    a = review["alerts"]
    scoped = ([("all", a["overall"])] if a["overall"] else []) + [("p", x) for x in a["by_promotion"]] + \
        [("c", x) for x in a["by_campaign"]]
    alerts = pd.DataFrame([{
        t["key"]: {"all": t["all"], "p": promo(x["key"])}.get(kind, x["key"]), t["n"]: x["alerts"], t["acked"]: x["acked"],
        t["in_target"]: x["acked_in_target"], t["ack_med"]: _minutes(x["ack_median_s"]),
        t["ack_p90"]: _minutes(x["ack_p90_s"]), t["res_med"]: _minutes(x["resolve_median_s"]),
        t["res_p90"]: _minutes(x["resolve_p90_s"])} for kind, x in scoped])
    models = pd.DataFrame([{
        t["version"]: v["model_version"], t["first"]: _when(v["first_ts"]), t["last"]: _when(v["last_ts"]),
        t["slots"]: v["slots_decided"], t["roi"]: v["roi"], t["calibration"]: v["calibration"]}
        for v in review["models"]["versions"]])
    authorities = pd.DataFrame([{
        t["who"]: t.get(f"decided.{r['decided_by']}", r["decided_by"]), t["spend"]: r["spend"], t["gmv"]: r["gmv"],
        t["roi"]: r["roi"], t["profit"]: r["profit"]} for r in review["authorities"]])
    kpi = pd.DataFrame([{
        t["promotion"]: promo(r["promotion"]), t["spend"]: r["spend"], t["gmv"]: r["gmv"], t["roi"]: r["roi"],
        t["profit"]: r["profit"], t["share"].format(p=review["kpi"]["algorithm_share"]):
        round(r["profit"] * review["kpi"]["algorithm_share"], 2)} for r in review["kpi"]["by_promotion"]])
    kpi_by_campaign = pd.DataFrame([{
        t["campaign"]: r["campaign_id"], t["spend"]: r["spend"], t["gmv"]: r["gmv"], t["roi"]: r["roi"],
        t["profit"]: r["profit"]} for r in review["kpi"]["by_campaign"]])
    return {"kpi": kpi, "kpi_by_campaign": kpi_by_campaign, "breakers": breakers,
            "breakers_by_promotion": by_promotion, "breakers_by_campaign": by_campaign, "overrides": overrides,
            "alerts": alerts, "models": models, "authorities": authorities}


def review_html(review: dict, lang: str) -> str:
    """The whole review as one HTML page in `lang` (zh or en), charts inlined when vl-convert is installed."""
    if lang not in LANGS:
        raise ValueError(f"lang={lang!r}: must be one of {LANGS}")
    t = T[lang]
    k = review["kpi"]
    tables = review_tables(review, lang)
    days = ", ".join(f"{d:g}" for d in review["models"]["iteration_days"]) or t["none"]
    head = (f"<h1>{html.escape(t['title'].format(a=review['period']['from'], b=review['period']['to']))}</h1>"
            f"<h2>{t['kpi']}</h2><p>{t['profit']}: {k['operations_profit']:,.0f} · "
            f"{t['share'].format(p=k['algorithm_share'])}: {k['algorithm_profit']:,.0f} · {t['roi']} {k['roi']}</p>"
            + _table(tables["kpi"]) + _table(tables["kpi_by_campaign"])
            + f"<h2>{t['breakers']}</h2>" + _table(tables["breakers"]) + _table(tables["breakers_by_promotion"])
            + _table(tables["breakers_by_campaign"])
            + f"<h2>{t['overrides']}</h2><p>{t['counts'].format(**review['overrides']['counts'])}</p>"
            + _table(tables["overrides"])
            + f"<h2>{t['alerts'].format(m=review['alerts']['target_s'] // 60)}</h2>" + _table(tables["alerts"])
            + f"<h2>{t['models']}</h2><p>{t['iteration'].format(days=days, target=review['models']['iteration_target_days'])}</p>"
            + _table(tables["models"]) + f"<h2>{t['authorities']}</h2>" + _table(tables["authorities"]))
    return standalone_html(review_charts(review, lang), head)
