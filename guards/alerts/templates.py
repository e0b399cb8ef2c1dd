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
from guards.alerts.core import AlertRecord
from guards.alerts.events import AlertKind, AlertPhase

TOP_DRIVERS = 3

TITLES = {
    "zh": {
        AlertKind.GUARD_TRIPPED: "ROI 守护熔断", AlertKind.GUARD_RESTORED: "ROI 守护已恢复",
        AlertKind.PROBATION_FAILED: "试运行失败，重新熔断", AlertKind.DATA_STALE: "数据过期",
        AlertKind.DATA_FRESH: "数据已恢复", AlertKind.KILL_SWITCH_ON: "全局急停已开启",
        AlertKind.KILL_SWITCH_OFF: "全局急停已关闭", AlertKind.OVERRIDE_APPROVED: "人工干预已批准",
        AlertKind.OVERRIDE_EXPIRED: "人工干预已到期", AlertKind.TEST: "测试消息",
        AlertKind.MODEL_LAUNCHED: "模型版本已上线", AlertKind.MODEL_ROLLED_BACK: "模型版本已回滚",
    },
    "en": {
        AlertKind.GUARD_TRIPPED: "ROI guard tripped", AlertKind.GUARD_RESTORED: "ROI guard restored",
        AlertKind.PROBATION_FAILED: "Probation failed, tripped again", AlertKind.DATA_STALE: "Data stale",
        AlertKind.DATA_FRESH: "Data fresh again", AlertKind.KILL_SWITCH_ON: "Kill switch ON",
        AlertKind.KILL_SWITCH_OFF: "Kill switch off", AlertKind.OVERRIDE_APPROVED: "Override approved",
        AlertKind.OVERRIDE_EXPIRED: "Override expired", AlertKind.TEST: "Test message",
        AlertKind.MODEL_LAUNCHED: "Model version launched", AlertKind.MODEL_ROLLED_BACK: "Model version rolled back",
    },
}
ACTIONS = {
    "zh": {AlertKind.GUARD_TRIPPED: "流量已切换到人工规则池",
           AlertKind.PROBATION_FAILED: "流量已回到人工规则池",
           AlertKind.KILL_SWITCH_ON: "所有计划由人工规则池接管",
           AlertKind.DATA_STALE: "数据过期按危险处理",
           AlertKind.GUARD_RESTORED: "模型已恢复出价"},
    "en": {AlertKind.GUARD_TRIPPED: "traffic switched to the manual rule pool",
           AlertKind.PROBATION_FAILED: "traffic back on the manual rule pool",
           AlertKind.KILL_SWITCH_ON: "the manual rule pool serves every campaign",
           AlertKind.DATA_STALE: "stale data is treated as danger",
           AlertKind.GUARD_RESTORED: "the model bids again"},
}
WORDS = {
    "zh": {"critical": "严重", "warning": "警告", "info": "通知", "resolved": "已恢复",
           "campaign": "计划", "guard": "守护", "pred": "预测 ROI", "cal": "校准后 ROI", "real": "实际 ROI", "floor": "底线",
           "risk": "风险花费", "action": "处理", "drivers": "主要驱动因素（SHAP，元/点击）",
           "repeats": "同一情况另有 {n} 次触发", "open": "在面板中查看并确认", "alerts": "BidLens 告警",
           "lasted": "持续 {m} 分钟", "sep": "：", "detail": "说明",
           "still": "重复提醒：自 {t} 起仍未恢复、未确认",
           "repeat": "重发：ref {ref} 发出后未收到答复，可能已送达（重复请忽略）",
           "more": "……另有 {n} 条，见面板"},
    "en": {"critical": "CRITICAL", "warning": "WARNING", "info": "INFO", "resolved": "RESOLVED",
           "campaign": "Campaign", "guard": "Guard", "pred": "Predicted ROI", "cal": "Calibrated ROI", "real": "Realised ROI",
           "floor": "Floor", "risk": "Spend at risk", "action": "Action",
           "drivers": "Top drivers (SHAP, yuan per click)", "repeats": "{n} more firings of the same condition",
           "open": "Open in the panel to acknowledge", "alerts": "BidLens alerts",
           "lasted": "lasted {m} min", "sep": ": ", "detail": "Detail",
           "still": "Reminder: firing since {t}, not acknowledged",
           "repeat": "Repeat of ref {ref}: sent without an answer, it may have arrived (ignore if so)",
           "more": "… and {n} more (see the panel)"},
}
COLOURS = {"critical": "warning", "warning": "warning", "info": "info", "resolved": "info"}


@dataclass(frozen=True)
class Style:
    """How a channel wants its messages: language zh | en | both, format markdown | text."""

    language: str = "zh"
    fmt: str = "markdown"
    panel_url: str = "http://localhost:8501"
    titles: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # config overrides


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
    parts = [f"{w[k]} {v}" for k, v in (("pred", _num(p.get("pred_roi"), ".2f")),
                                         ("cal", _num(p.get("calibrated_roi"), ".2f")),
                                         ("real", _num(p.get("realised_roi"), ".2f")),
                                         ("floor", _num(p.get("floor"), ".2f"))) if v is not None]
    risk = _num(p.get("spend_at_risk"), ",.0f")
    if risk is not None:
        parts.append(f"{w['risk']} ¥{risk}")
    return parts


def _in_language(given: object, lang: str) -> str:
    """A payload text given per language ({"zh": ..., "en": ...}) or as one string."""
    if isinstance(given, dict):
        return str(given.get(lang) or next(iter(given.values()), ""))
    return str(given) if given else ""


def _action(a: AlertRecord, lang: str) -> str:
    return _in_language(a.payload.get("action"), lang) or ACTIONS[lang].get(AlertKind(a.kind), "")


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
    who = [f"{w['campaign']}{w['sep']}{b}{a.campaign_id}{b}" if a.campaign_id else "",
           f"{w['guard']}{w['sep']}{a.guard}" if a.guard else "", _lasted(a, lang)]
    if any(who):
        body.append([q + " · ".join(x for x in who if x)])
    figures = _figures(a, lang)
    if figures:
        body.append([q + " · ".join(figures)])
    action = _action(a, lang)
    if action:
        body.append([f"{q}{w['action']}{w['sep']}{action}"])
    if a.repeats:
        body.append([w["repeats"].format(n=a.repeats)])
    detail = _in_language(a.payload.get("detail"), lang)
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
        bits = [f"【{w[_label(a)]}】{_title(a, lang, style)}",
                f"**{a.campaign_id}**" if md and a.campaign_id else (a.campaign_id or ""),
                " / ".join(_figures(a, lang)), _lasted(a, lang)]
        body.append([("- " if md else "") + " · ".join(x for x in bits if x)])
    return _Block(lang, top, body, [_link_line(style, alerts[0].alert_id, lang)])


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
