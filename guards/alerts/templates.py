"""Alert messages in Simplified Chinese and English, as WeCom markdown or plain text.

One alert gets a detailed message (figures, what the guard did, top SHAP drivers,
panel link); a group gets one line per alert so a storm stays one readable message.
Titles per kind can be replaced in the config ([templates.zh] / [templates.en]).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from control.clock import PROMOTION_TZ
from guards.alerts.core import AlertRecord, most_severe
from guards.alerts.events import AlertKind, AlertPhase

TOP_DRIVERS = 3

TITLES = {
    "zh": {
        AlertKind.GUARD_TRIPPED: "ROI 守护熔断", AlertKind.GUARD_RESTORED: "ROI 守护已恢复",
        AlertKind.PROBATION_FAILED: "试运行失败，重新熔断", AlertKind.ACTION_CHANGED: "守护处理方式已变更",
        AlertKind.DATA_STALE: "数据过期",
        AlertKind.DATA_FRESH: "数据已恢复", AlertKind.KILL_SWITCH_ON: "急停已开启",
        AlertKind.KILL_SWITCH_OFF: "急停已关闭", AlertKind.OVERRIDE_PENDING: "人工干预待审批",
        AlertKind.OVERRIDE_APPROVED: "人工干预已批准", AlertKind.OVERRIDE_REJECTED: "人工干预已驳回",
        AlertKind.OVERRIDE_REVOKED: "人工干预已撤销",
        AlertKind.OVERRIDE_EXPIRED: "人工干预已到期", AlertKind.REMINDER: "未确认告警提醒",
        AlertKind.DAY_OVER: "促销日结束，守护已停止", AlertKind.TEST: "测试消息",
        AlertKind.PULL_ITEM: "竞品降价，商品已下架", AlertKind.ITEM_RESTORED: "竞品价格回升，商品已恢复",
        AlertKind.LOW_STOCK: "库存低于安全库存，请补货", AlertKind.STOCK_RECOVERED: "库存已恢复",
        AlertKind.MODEL_LAUNCHED: "模型版本已上线", AlertKind.MODEL_ROLLED_BACK: "模型版本已回滚",
    },
    "en": {
        AlertKind.GUARD_TRIPPED: "ROI guard tripped", AlertKind.GUARD_RESTORED: "ROI guard restored",
        AlertKind.PROBATION_FAILED: "Probation failed, tripped again", AlertKind.ACTION_CHANGED: "Guard action changed",
        AlertKind.DATA_STALE: "Data stale",
        AlertKind.DATA_FRESH: "Data fresh again", AlertKind.KILL_SWITCH_ON: "Kill switch ON",
        AlertKind.KILL_SWITCH_OFF: "Kill switch off", AlertKind.OVERRIDE_PENDING: "Override awaiting approval",
        AlertKind.OVERRIDE_APPROVED: "Override approved", AlertKind.OVERRIDE_REJECTED: "Override rejected",
        AlertKind.OVERRIDE_REVOKED: "Override revoked",
        AlertKind.OVERRIDE_EXPIRED: "Override expired", AlertKind.REMINDER: "Open alerts not acknowledged",
        AlertKind.DAY_OVER: "Promotion day over: the guard has stopped", AlertKind.TEST: "Test message",
        AlertKind.PULL_ITEM: "Competitor price drop: item pulled", AlertKind.ITEM_RESTORED: "Competitor prices back: item on sale",
        AlertKind.LOW_STOCK: "Stock below safety stock: replenish", AlertKind.STOCK_RECOVERED: "Stock recovered",
        AlertKind.MODEL_LAUNCHED: "Model version launched", AlertKind.MODEL_ROLLED_BACK: "Model version rolled back",
    },
}
# What a guard does with the traffic it holds (payload "action" as a code, as the guard reports it).
GUARD_ACTIONS = {
    "zh": {"pool": "人工规则池接管", "bid_cut": "模型出价下调", "pause": "暂停投放"},
    "en": {"pool": "the manual rule pool serves", "bid_cut": "the model's bid is cut", "pause": "paused"},
}
MAX_MEMBERS_SHOWN = 10
ACTIONS = {
    "zh": {AlertKind.GUARD_TRIPPED: "流量已切换到人工规则池",
           AlertKind.PROBATION_FAILED: "流量已回到人工规则池",
           AlertKind.KILL_SWITCH_ON: "所有计划由人工规则池接管",
           AlertKind.DATA_STALE: "数据过期按危险处理",
           AlertKind.GUARD_RESTORED: "模型已恢复出价",
           AlertKind.PULL_ITEM: "已暂停该计划全部人群包的出价（下架）",
           AlertKind.ITEM_RESTORED: "恢复出价",
           AlertKind.LOW_STOCK: "请补货",
           AlertKind.STOCK_RECOVERED: "无需补货"},
    "en": {AlertKind.GUARD_TRIPPED: "traffic switched to the manual rule pool",
           AlertKind.PROBATION_FAILED: "traffic back on the manual rule pool",
           AlertKind.KILL_SWITCH_ON: "the manual rule pool serves every campaign",
           AlertKind.DATA_STALE: "stale data is treated as danger",
           AlertKind.GUARD_RESTORED: "the model bids again",
           AlertKind.PULL_ITEM: "bidding paused on every audience package (item pulled)",
           AlertKind.ITEM_RESTORED: "bidding resumed",
           AlertKind.LOW_STOCK: "replenish the stock",
           AlertKind.STOCK_RECOVERED: "no replenishment needed"},
}
WORDS = {
    "zh": {"critical": "严重", "warning": "警告", "info": "通知", "resolved": "已恢复",
           "campaign": "计划", "guard": "守护", "pred": "预测 ROI", "cal": "校准后 ROI", "real": "实际 ROI", "floor": "底线",
           "risk": "风险花费", "action": "处理", "drivers": "主要驱动因素（SHAP，元/点击）",
           "repeats": "同一情况另有 {n} 次触发", "open": "在面板中查看并确认", "alerts": "BidLens 告警",
           "campaigns": "{shown} 等 {n} 个计划", "changed": "处理方式变更", "factor": "出价 ×{f}",
           "notify": "通知", "since": "自 {t} 起", "open_items": "{n} 个告警仍未恢复、未确认",
           "lasted": "持续 {m} 分钟", "sep": "：", "detail": "说明",
           "still": "重复提醒：自 {t} 起仍未恢复、未确认",
           "repeat": "重发：ref {ref} 发出后未收到答复，可能已送达（重复请忽略）",
           "more": "……另有 {n} 条，见面板",
           "drop": "竞品降价", "price": "竞品价", "ref": "参考价", "max_drop": "下架线",
           "days": "可售天数", "min_days": "安全库存（天）", "stock": "库存", "sales": "日销量"},
    "en": {"critical": "CRITICAL", "warning": "WARNING", "info": "INFO", "resolved": "RESOLVED",
           "campaign": "Campaign", "guard": "Guard", "pred": "Predicted ROI", "cal": "Calibrated ROI", "real": "Realised ROI",
           "floor": "Floor", "risk": "Spend at risk", "action": "Action",
           "drivers": "Top drivers (SHAP, yuan per click)", "repeats": "{n} more firings of the same condition",
           "open": "Open in the panel to acknowledge", "alerts": "BidLens alerts",
           "campaigns": "{shown} and others, {n} campaigns", "changed": "Action changed", "factor": "bid x{f}",
           "notify": "For", "since": "since {t}", "open_items": "{n} alerts still firing, not acknowledged",
           "lasted": "lasted {m} min", "sep": ": ", "detail": "Detail",
           "still": "Reminder: firing since {t}, not acknowledged",
           "repeat": "Repeat of ref {ref}: sent without an answer, it may have arrived (ignore if so)",
           "more": "… and {n} more (see the panel)",
           "drop": "Competitor price drop", "price": "Competitor price", "ref": "reference", "max_drop": "pull at",
           "days": "Days of stock", "min_days": "safety stock (days)", "stock": "Stock", "sales": "sales per day"},
}
COLOURS = {"critical": "warning", "warning": "warning", "info": "info", "resolved": "info"}


@dataclass(frozen=True)
class Style:
    """How a channel wants its messages: language zh | en | both, format markdown | text."""

    language: str = "zh"
    fmt: str = "markdown"
    panel_url: str = "http://localhost:8501"
    titles: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # config overrides
    userids: Mapping[str, str] = field(default_factory=dict)  # username -> WeCom userid: <@userid> in markdown


def _label(a: AlertRecord) -> str:
    return "resolved" if a.phase is AlertPhase.RESOLVING else a.severity


def _title(a: AlertRecord, lang: str, style: Style) -> str:
    override = style.titles.get(lang, {}).get(str(a.kind))
    if override:
        return override.format_map(_Safe(campaign=a.campaign_id or "-", guard=a.guard or "-", **a.payload))
    return TITLES[lang][AlertKind(a.kind)]


class _Safe(dict):
    def __missing__(self, key):
        return "{" + key + "}"


def _num(value: object, fmt: str) -> str | None:
    return format(value, fmt) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _figures(a: AlertRecord, lang: str) -> list[str]:
    w, p = WORDS[lang], a.payload
    if p.get("members"):  # a shared condition: one member's figures would speak for all of them
        return []
    parts = [f"{w[k]} {v}" for k, v in (("pred", _num(p.get("pred_roi"), ".2f")),
                                         ("cal", _num(p.get("calibrated_roi"), ".2f")),
                                         ("real", _num(p.get("realised_roi"), ".2f")),
                                         ("floor", _num(p.get("floor"), ".2f"))) if v is not None]
    risk = _num(p.get("spend_at_risk"), ",.0f")
    if risk is not None:
        parts.append(f"{w['risk']} ¥{risk}")
    return parts + _evidence(p, w)


def _evidence(p: Mapping, w: Mapping[str, str]) -> list[str]:
    """The sibling breakers' evidence: a competitor's price against its reference; days of stock."""
    parts = []
    drop, limit = _num(p.get("competitor_price_drop"), ".1%"), _num(p.get("max_drop"), ".0%")
    if drop is not None:
        parts.append(f"{w['drop']} {drop}" + (f" ({w['max_drop']} {limit})" if limit is not None else ""))
    price, ref = _num(p.get("competitor_price"), ",.2f"), _num(p.get("competitor_reference_price"), ",.2f")
    if price is not None and ref is not None:
        parts.append(f"{w['price']} ¥{price} / {w['ref']} ¥{ref}")
    days, floor = _num(p.get("days_of_stock"), ".1f"), _num(p.get("min_days"), ".0f")
    if days is not None:
        parts.append(f"{w['days']} {days}" + (f" ({w['min_days']} {floor})" if floor is not None else ""))
    stock, sales = _num(p.get("stock_units"), ",.0f"), _num(p.get("sales_per_day"), ",.0f")
    if stock is not None:
        parts.append(f"{w['stock']} {stock}" + (f", {w['sales']} {sales}" if sales is not None else ""))
    return parts


def in_language(given: object, lang: str) -> str:
    """A payload text given per language ({"zh": ..., "en": ...}) or as one string."""
    if isinstance(given, dict):
        return str(given.get(lang) or next(iter(given.values()), ""))
    return str(given) if given else ""


def _guard_action(code: object, factor: object, lang: str) -> str:
    """A guard action code in words (with the bid factor of a cut); any other text as given."""
    if not isinstance(code, str) or code not in GUARD_ACTIONS[lang]:
        return in_language(code, lang)
    words = GUARD_ACTIONS[lang][code]
    f = _num(factor, ".2f")
    if code != "bid_cut" or f is None:
        return words
    return f"{words}（{WORDS[lang]['factor'].format(f=f)}）" if lang == "zh" else \
        f"{words} ({WORDS[lang]['factor'].format(f=f)})"


def _action(a: AlertRecord, lang: str) -> str:
    p = a.payload
    return _guard_action(p.get("action"), p.get("bid_factor"), lang) or ACTIONS[lang].get(AlertKind(a.kind), "")


def _change(a: AlertRecord, lang: str) -> str:
    """What an action change changed: before -> after."""
    p = a.payload
    if "action_before" not in p or "action_after" not in p:
        return ""
    return (f"{WORDS[lang]['changed']}{WORDS[lang]['sep']}{_guard_action(p['action_before'], None, lang)} → "
            f"{_guard_action(p['action_after'], p.get('bid_factor'), lang)}")


def _campaigns(a: AlertRecord, lang: str) -> str:
    """The campaign, or the campaigns of a shared condition (its members), the first few by name."""
    members = a.payload.get("members")
    if not isinstance(members, dict) or not members:
        return a.campaign_id or ""
    names = sorted({str(c) for c in members.values() if c})
    if len(names) <= MAX_MEMBERS_SHOWN:
        return "、".join(names) if lang == "zh" else ", ".join(names)
    shown = ("、" if lang == "zh" else ", ").join(names[:MAX_MEMBERS_SHOWN])
    return WORDS[lang]["campaigns"].format(shown=shown, n=len(names))


def _notify(a: AlertRecord, lang: str, style: Style, md: bool) -> str:
    """Who the alert is addressed to: a markdown mention where their WeCom userid is known (a text
    message mentions them in its lists, see guards.alerts.wecom)."""
    names = a.payload.get("notify") or []
    if not names:
        return ""
    shown = [f"<@{style.userids[n]}>" if md and n in style.userids else n for n in names]
    return f"{WORDS[lang]['notify']}{WORDS[lang]['sep']}{' '.join(shown)}"


def _reminder_items(a: AlertRecord, lang: str, md: bool) -> list[list[str]]:
    w = WORDS[lang]
    items = []
    for i in a.payload.get("items") or []:
        kind = i.get("kind")
        try:
            title = TITLES[lang][AlertKind(kind)]
        except ValueError:
            title = str(kind)
        who = f"**{i.get('campaign_id')}**" if md and i.get("campaign_id") else (i.get("campaign_id") or "")
        if i.get("members", 0) > 1:
            who = w["campaigns"].format(shown=who or "-", n=i["members"])
        since = w["since"].format(t=_when(i["fired_ts"])) if isinstance(i.get("fired_ts"), int) else ""
        bits = [f"【{w.get(i.get('severity'), i.get('severity'))}】{title}", who, since]
        items.append([("- " if md else "") + " · ".join(x for x in bits if x)])
    return items


def _drivers(a: AlertRecord, lang: str) -> list[str]:
    drivers = sorted(a.payload.get("drivers") or [], key=lambda d: -abs(float(d.get("delta", 0))))
    return [f"{i}. {d.get('display_' + lang) or d.get('feature')} {float(d['delta']):+.3f}"
            for i, d in enumerate(drivers[:TOP_DRIVERS], 1)]


def _when(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, PROMOTION_TZ).strftime("%m-%d %H:%M")


def _lasted(a: AlertRecord, lang: str) -> str:
    fired = a.payload.get("fired_ts")
    if a.phase is AlertPhase.RESOLVING and isinstance(fired, int):
        return WORDS[lang]["lasted"].format(m=max(0, round((a.occurred_ts - fired) / 60)))
    return ""


def link(panel_url: str, alert_id: int) -> str:
    return f"{panel_url.rstrip('/')}/alerts?alert={alert_id}"


@dataclass
class _Block:
    """One language's part of a message: what must stay (head, tail) and the body that gives way.

    body holds items (each a few lines that go together, e.g. the drivers' heading with
    the first driver); when the message is too long the last items go first, replaced
    by one "… and N more" line.
    """

    lang: str
    head: list[str]
    body: list[list[str]]
    tail: list[str]
    omitted: int = 0

    def lines(self) -> list[str]:
        more = [WORDS[self.lang]["more"].format(n=self.omitted)] if self.omitted else []
        return [*self.head, *(x for item in self.body for x in item), *more, *self.tail]


def _link_line(style: Style, alert_id: int, lang: str) -> str:
    w, url = WORDS[lang], link(style.panel_url, alert_id)
    return f"[{w['open']}]({url})" if style.fmt == "markdown" else f"{w['open']}: {url}"


def _repeat_line(repeat_of: str, lang: str, md: bool) -> str:
    text = WORDS[lang]["repeat"].format(ref=repeat_of)
    return f"> **{text}**" if md else text


def _single(a: AlertRecord, lang: str, style: Style, repeat_of: str | None = None) -> _Block:
    w, md = WORDS[lang], style.fmt == "markdown"
    label = w[_label(a)]
    head = f"【{label}】{_title(a, lang, style)}"
    top = [f'### <font color="{COLOURS[_label(a)]}">{head}</font>' if md else head]
    if repeat_of:
        top.append(_repeat_line(repeat_of, lang, md))
    if a.payload.get("repeat_of") and isinstance(a.payload.get("fired_ts"), int):
        top.append(w["still"].format(t=_when(a.payload["fired_ts"])))
    q = "> " if md else ""
    b = "**" if md else ""
    body: list[list[str]] = []
    if AlertKind(a.kind) is AlertKind.REMINDER:
        body.append([q + w["open_items"].format(n=len(a.payload.get("items") or []))])
        body += _reminder_items(a, lang, md)
        return _Block(lang, top, body, [_link_line(style, _reminder_target(a), lang)])
    campaigns = _campaigns(a, lang)
    who = [f"{w['campaign']}{w['sep']}{b}{campaigns}{b}" if campaigns else "",
           f"{w['guard']}{w['sep']}{a.guard}" if a.guard else "", _lasted(a, lang)]
    if any(who):
        body.append([q + " · ".join(x for x in who if x)])
    notify = _notify(a, lang, style, md)
    if notify:
        body.append([q + notify])
    change = _change(a, lang)
    if change:
        body.append([q + change])
    figures = _figures(a, lang)
    if figures:
        body.append([q + " · ".join(figures)])
    action = "" if change else _action(a, lang)
    if action:
        body.append([f"{q}{w['action']}{w['sep']}{action}"])
    if a.repeats:
        body.append([w["repeats"].format(n=a.repeats)])
    detail = in_language(a.payload.get("detail"), lang)
    if detail:
        body.append([f"{q}{w['detail']}{w['sep']}{detail}"])
    drivers = _drivers(a, lang)
    if drivers:  # the heading goes with the first driver, never alone
        body += [[f"{b}{w['drivers']}{b}", drivers[0]], *([d] for d in drivers[1:])]
    return _Block(lang, top, body, [_link_line(style, a.alert_id, lang)])


def _group(alerts: Sequence[AlertRecord], lang: str, style: Style, repeat_of: str | None = None) -> _Block:
    w, md = WORDS[lang], style.fmt == "markdown"
    counts = {}
    for a in alerts:
        counts[_label(a)] = counts.get(_label(a), 0) + 1
    summary = "、".join(f"{w[k]} {n}" for k, n in counts.items()) if lang == "zh" else \
        ", ".join(f"{w[k]} {n}" for k, n in counts.items())
    worst = "critical" if "critical" in counts else next(iter(counts))
    head = f"{w['alerts']} ×{len(alerts)} ({summary})"
    top = [f'### <font color="{COLOURS[worst]}">{head}</font>' if md else head]
    if repeat_of:
        top.append(_repeat_line(repeat_of, lang, md))
    body = []
    for a in alerts:
        campaigns = w["open_items"].format(n=len(a.payload.get("items") or [])) \
            if AlertKind(a.kind) is AlertKind.REMINDER else _campaigns(a, lang)
        bits = [f"【{w[_label(a)]}】{_title(a, lang, style)}", f"**{campaigns}**" if md and campaigns else campaigns,
                " / ".join(_figures(a, lang)), _change(a, lang), _lasted(a, lang), _notify(a, lang, style, md)]
        body.append([("- " if md else "") + " · ".join(x for x in bits if x)])
    severest = most_severe(alerts)
    target = _reminder_target(severest) if AlertKind(severest.kind) is AlertKind.REMINDER else severest.alert_id
    return _Block(lang, top, body, [_link_line(style, target, lang)])


def _reminder_target(a: AlertRecord) -> int:
    """A reminder links to the first (most severe) condition it reminds of."""
    items = a.payload.get("items") or []
    return int(items[0]["alert_id"]) if items else a.alert_id


def _compose(blocks: Sequence[_Block], footer: str) -> str:
    return "\n\n".join("\n".join(b.lines()) for b in blocks) + "\n" + footer


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def _clip(line: str, max_bytes: int) -> str:
    """One line cut to max_bytes of UTF-8 on a character boundary, ending with an ellipsis."""
    if _size(line) <= max_bytes:
        return line
    return line.encode("utf-8")[:max(0, max_bytes - 3)].decode("utf-8", errors="ignore") + "…"


def _shorten_long_lines(blocks: list[_Block], footer: str, max_bytes: int, cap: int) -> None:
    """Clip the longest body lines (a long free-text detail) to one common length, no shorter than cap.

    The length is the highest that saves enough bytes (water-filling), so the zh and
    en details keep as much as each other.
    """
    for _ in range(8):  # a cut on a character boundary may leave a few bytes over: one more round
        over = _size(_compose(blocks, footer)) - max_bytes
        long = sorted((_size(x) for b in blocks for item in b.body for x in item if _size(x) > cap), reverse=True)
        if over <= 0 or not long:
            return
        length = cap
        for k in range(1, len(long) + 1):
            common = (sum(long[:k]) - over) // k
            if common >= (long[k] if k < len(long) else cap):
                length = max(cap, common)
                break
        for b in blocks:
            b.body = [[_clip(x, length) for x in item] for item in b.body]


def _fit(blocks: list[_Block], footer: str, max_bytes: int) -> str:
    """The message within max_bytes: the bodies give way, never the heads, links or the reference.

    The longest body lines are clipped first, no shorter than a quarter of the room
    (a long free-text detail); then items go from the end of the longest body, so
    both languages keep as much as each other.
    """
    text = _compose(blocks, footer)
    if _size(text) <= max_bytes:
        return text
    _shorten_long_lines(blocks, footer, max_bytes, cap=max(64, max_bytes // (4 * len(blocks))))
    body_bytes = {id(b): sum(_size(x) + 1 for item in b.body for x in item) for b in blocks}
    while (over := _size(text := _compose(blocks, footer)) - max_bytes) > 0:
        if not any(b.body for b in blocks):
            break
        while over > 0:  # drop about enough at once, then measure again (the "more" lines change too)
            longest = max((b for b in blocks if b.body), default=None, key=lambda b: body_bytes[id(b)])
            if longest is None:
                break
            dropped = sum(_size(x) + 1 for x in longest.body.pop())
            body_bytes[id(longest)] -= dropped
            longest.omitted += 1
            over -= dropped
    if _size(text) > max_bytes:  # only absurd titles get here (a configured one): clip the heads too
        for b in blocks:
            b.head = [_clip(x, max(32, max_bytes // (8 * len(blocks)))) for x in b.head]
        text = _compose(blocks, footer)
    return text


def render(alerts: Sequence[AlertRecord], message_id: str, style: Style, *, repeat_of: str | None = None,
           max_bytes: int | None = None) -> str:
    """The message for a group of alerts (one alert: the detailed form).

    repeat_of: the ref of an earlier message with the same alerts that may have been
    shown (no answer came): this one says it is its repeat. max_bytes: fit the message
    within that many bytes of UTF-8 by giving way in the body ("… and N more"); the
    title, the repeat mark, the panel link, the second language and the reference stay.
    """
    if not alerts:
        raise ValueError("render needs at least one alert")
    langs = ("zh", "en") if style.language == "both" else (style.language,)
    blocks = [_single(alerts[0], lang, style, repeat_of) if len(alerts) == 1 else
              _group(alerts, lang, style, repeat_of) for lang in langs]
    footer = f"ref {message_id} · {_when(max(a.occurred_ts for a in alerts))} (UTC+8)"
    footer = f'<font color="comment">{footer}</font>' if style.fmt == "markdown" else footer
    if max_bytes is None:
        return _compose(blocks, footer)
    return _fit(blocks, footer, max_bytes)
