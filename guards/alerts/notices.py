"""Alerts about what people and the worker did (not a guard's state machine): pure builders.

The kill switch, an override's four-eyes lifecycle and the end of the promotion day
become `AlertEvent`s here; `app.service.Control` and the guard worker enqueue them in
the transaction that made the change. Texts in Simplified Chinese and English.

Conditions they hold: a kill switch that is on (`kill_switch:*` for the global one,
`kill_switch:<campaign>`) until it is off; an override awaiting approval
(`override:<id>`, routed like any alert, e.g. to the managers' group by kind) until it
is approved, rejected, revoked or expires, each of which ends it and tells the proposer.
"""

from __future__ import annotations

import datetime as dt

from control.clock import PROMOTION_TZ
from control.domain import Override, OverrideField
from control.policy import KillSwitch
from guards.alerts.events import AlertEvent, AlertKind, Severity

KILL_SWITCH_GUARD = "kill_switch"
OVERRIDE_GUARD = "override"
WORKER_GUARD = "worker"
_FIELDS = {"zh": {OverrideField.BID: "出价", OverrideField.BUDGET: "预算", OverrideField.AUDIENCE_ON: "人群包投放"},
           "en": {OverrideField.BID: "bid", OverrideField.BUDGET: "budget", OverrideField.AUDIENCE_ON: "audience on"}}


def _when(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, PROMOTION_TZ).strftime("%m-%d %H:%M")


def kill_switch_alerts(before: KillSwitch, after: KillSwitch, actor: str, reason: str,
                       now_ts: int) -> list[AlertEvent]:
    """One alert per switch that changed: on opens its condition, off resolves it."""
    changes = []
    if after.global_on != before.global_on:
        changes.append((None, after.global_on))
    changes += [(c, True) for c in sorted(after.campaigns - before.campaigns)]
    changes += [(c, False) for c in sorted(before.campaigns - after.campaigns)]
    out = []
    for campaign, on in changes:
        scope_zh, scope_en = ("所有计划", "every campaign") if campaign is None else ("该计划", "the campaign")
        verb_zh, verb_en = ("开启", "switched ON") if on else ("关闭", "switched off")
        payload = {"actor": actor, "reason": reason,
                   "detail": {"zh": f"{actor} {verb_zh}{'全局' if campaign is None else ''}急停。原因：{reason}",
                              "en": f"{actor} {verb_en} the {'global ' if campaign is None else ''}kill switch. "
                                    f"Reason: {reason}"}}
        if on:
            payload["action"] = {"zh": f"{scope_zh}由人工规则池接管", "en": f"the manual rule pool serves {scope_en}"}
        out.append(AlertEvent(AlertKind.KILL_SWITCH_ON if on else AlertKind.KILL_SWITCH_OFF,
                              Severity.CRITICAL if on else Severity.INFO, now_ts, campaign_id=campaign,
                              guard=KILL_SWITCH_GUARD, condition_key=f"{KILL_SWITCH_GUARD}:{campaign or '*'}",
                              payload=payload))
    return out


_DECISIONS = {
    AlertKind.OVERRIDE_APPROVED: ("{by} 已批准", "approved by {by}"),
    AlertKind.OVERRIDE_REJECTED: ("{by} 已驳回", "rejected by {by}"),
    AlertKind.OVERRIDE_REVOKED: ("{by} 已撤销", "revoked by {by}"),
    AlertKind.OVERRIDE_EXPIRED: ("已到期", "expired"),
}


def override_alert(kind: AlertKind, override: Override, now_ts: int, *, actor: str | None = None) -> AlertEvent:
    """An override's step as an alert: awaiting approval (a condition), or its end, told to the proposer."""
    o = override
    scope = o.scope.campaign_id + (f" / {o.scope.audience_package}" if o.scope.audience_package else "")
    what_zh = f"#{o.override_id} {scope} · {_FIELDS['zh'][o.field]} {o.value:g} · 提议人 {o.proposed_by} · " \
              f"理由：{o.reason} · 到期 {_when(o.expires_ts)}"
    what_en = f"#{o.override_id} {scope} · {_FIELDS['en'][o.field]} {o.value:g} · proposed by {o.proposed_by} · " \
              f"reason: {o.reason} · expires {_when(o.expires_ts)}"
    payload = {"override_id": o.override_id, "field": o.field.value, "value": o.value,
               "audience_package": o.scope.audience_package, "proposed_by": o.proposed_by,
               "expires_ts": o.expires_ts, "status": o.status.value}
    condition = f"{OVERRIDE_GUARD}:{o.override_id}"
    if kind is AlertKind.OVERRIDE_PENDING:
        payload["detail"] = {"zh": f"{what_zh}（需主管审批）", "en": f"{what_en} (a manager must approve)"}
        return AlertEvent(kind, Severity.WARNING, now_ts, campaign_id=o.scope.campaign_id, guard=OVERRIDE_GUARD,
                          condition_key=condition, payload=payload)
    zh, en = _DECISIONS[kind]
    by = actor or "-"
    comment = f" · {o.review_comment}" if o.review_comment and kind is not AlertKind.OVERRIDE_EXPIRED else ""
    payload.update(reviewed_by=o.reviewed_by, detail={"zh": f"{what_zh} · {zh.format(by=by)}{comment}",
                                                      "en": f"{what_en} · {en.format(by=by)}{comment}"})
    # The proposer is told, unless it is their own step (they revoked their own proposal).
    notify = () if actor == o.proposed_by else (o.proposed_by,)
    return AlertEvent(kind, Severity.INFO, now_ts, campaign_id=o.scope.campaign_id, guard=OVERRIDE_GUARD,
                      condition_key=condition, payload=payload, closes=condition, notify=notify)


def day_over_alert(day_end_ts: int, trips: int, held: int) -> AlertEvent:
    """The worker's word that the promotion day is over and it evaluates no more."""
    return AlertEvent(AlertKind.DAY_OVER, Severity.INFO, day_end_ts, guard=WORKER_GUARD, condition_key="day_over",
                      payload={"trips": trips, "held": held, "detail": {
                          "zh": f"守护不再评估、不再提醒，直到新的促销日开始；未关闭的告警见面板。"
                                f"今日熔断 {trips} 次，{held} 个守护仍接管其计划。",
                          "en": f"The guard evaluates and reminds no more until a new promotion day starts; what is "
                                f"still open is in the panel. {trips} trips today; {held} guards still hold their "
                                f"campaigns."}})
