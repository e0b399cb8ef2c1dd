"""Pure parts: event contract, routing config, templates, packing, rate window, backoff, response times."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control.domain import InvalidValue
from guards.alerts import AlertEvent, AlertKind, Severity
from guards.alerts.config import Promotion, parse_config
from guards.alerts.core import (
    AlertRecord,
    OpenAlert,
    RateWindow,
    backoff_s,
    due_reminders,
    pack,
    plan_enqueue,
)
from guards.alerts.metrics import response_times_by_day, response_times_by_promotion
from guards.alerts.templates import Style, render

T = 1_787_000_000
DRIVERS = [{"feature": "competitor_bid", "display_zh": "竞争出价", "display_en": "Competitor bid", "delta": -0.42},
           {"feature": "hour", "display_zh": "时段", "display_en": "Hour", "delta": 0.05},
           {"feature": "ctr_7d", "display_zh": "7日点击率", "display_en": "7-day CTR", "delta": -0.2},
           {"feature": "stock", "display_zh": "库存", "display_en": "Stock", "delta": 0.01}]


def record(i=1, kind=AlertKind.GUARD_TRIPPED, **kw) -> AlertRecord:
    base = dict(alert_id=i, event_key=f"e{i}", channel="ops", kind=kind, severity="critical",
                campaign_id=f"c{i:03d}", guard="roi", condition_key=f"roi:c{i:03d}",
                payload={"pred_roi": 1.8, "realised_roi": 1.72, "floor": 2.0, "spend_at_risk": 123456.0,
                         "drivers": DRIVERS},
                status="pending", occurred_ts=T, created_ts=T, next_attempt_ts=T)
    return AlertRecord(**{**base, **kw})


def test_event_validation_names_the_field():
    with pytest.raises(InvalidValue) as e:
        AlertEvent("exploded", Severity.CRITICAL, T)
    assert e.value.field == "kind"
    with pytest.raises(InvalidValue) as e:
        AlertEvent(AlertKind.GUARD_TRIPPED, "urgent", T)
    assert e.value.field == "severity"
    with pytest.raises(InvalidValue) as e:
        AlertEvent(AlertKind.GUARD_TRIPPED, Severity.CRITICAL, T, payload={"drivers": [{"delta": 1}]})
    assert e.value.field == "payload.drivers[0]"
    ev = AlertEvent(AlertKind.GUARD_TRIPPED, "critical", T, campaign_id="c1", guard="roi")
    assert ev.condition_key == "roi:c1" and ev.event_key == AlertEvent(
        AlertKind.GUARD_TRIPPED, "critical", T, campaign_id="c1", guard="roi", payload={"x": 1}).event_key


def test_detailed_message_zh_and_en_carries_figures_drivers_and_link():
    zh = render([record()], "ops-1", Style("zh", "markdown", "https://panel.example/"))
    assert "ROI 守护熔断" in zh and "c001" in zh and "1.80" in zh and "1.72" in zh and "2.00" in zh
    assert "¥123,456" in zh and "人工规则池" in zh and "https://panel.example/alerts?alert=1" in zh
    lines = zh.splitlines()
    top = [line for line in lines if line[:2] in ("1.", "2.", "3.", "4.")]
    assert [t.split()[1] for t in top] == ["竞争出价", "7日点击率", "时段"]  # top 3 by size
    en = render([record()], "ops-1", Style("en", "text"))
    assert "ROI guard tripped" in en and "Competitor bid -0.420" in en and "<font" not in en and "**" not in en
    both = render([record()], "ops-1", Style("both"))
    assert "ROI 守护熔断" in both and "ROI guard tripped" in both


def test_group_message_has_one_line_per_alert_and_config_titles():
    style = Style("en", "markdown", titles={"en": {"guard_tripped": "ROI below floor: {campaign}"}})
    text = render([record(i) for i in range(1, 6)], "ops-1", style)
    assert text.count("\n- ") == 5 and "×5" in text
    assert "ROI below floor: c003" in text


def test_pack_keeps_every_alert_once_in_order_within_the_limit():
    alerts = [record(i) for i in range(1, 121)]
    style = Style("zh")
    groups = pack(alerts, lambda g: render(g, "ops-x", style), 4096)
    assert [a.alert_id for g in groups for a in g] == list(range(1, 121))
    assert all(len(render(g, "ops-x", style).encode()) <= 4096 for g in groups)
    assert len(groups) < 10


def test_plan_enqueue_repeat_resolve_info():
    trip = AlertEvent(AlertKind.GUARD_TRIPPED, "critical", T, campaign_id="c1", guard="roi")
    interval = {"ops": 3600, "file": 0}.__getitem__
    open_ops = [OpenAlert("ops", 7, T - 100, False)]
    plan = plan_enqueue(trip, ["ops", "file"], open_ops, interval, T)
    assert plan.insert == ("file",) and plan.suppressed == (("ops", 7),)
    assert plan_enqueue(trip, ["ops"], open_ops, interval, T + 3500).insert == ("ops",)
    restored = AlertEvent(AlertKind.GUARD_RESTORED, "info", T, campaign_id="c1", guard="roi")
    plan = plan_enqueue(restored, ["other"], open_ops, interval, T)
    assert plan.insert == ("ops",) and plan.resolve  # announced where the trip went
    assert plan_enqueue(restored, ["ops"], [], interval, T) == plan_enqueue(restored, [], [], interval, T)
    assert not plan_enqueue(restored, ["ops"], [], interval, T).insert
    info = AlertEvent(AlertKind.OVERRIDE_APPROVED, "info", T, campaign_id="c1")
    assert plan_enqueue(info, ["ops"], open_ops, interval, T).insert == ("ops",)


@given(st.lists(st.integers(min_value=0, max_value=600), max_size=60), st.integers(min_value=0, max_value=700))
def test_rate_window_never_allows_more_than_the_limit(sent, now):
    w = RateWindow(limit=20, window_s=60)
    sent = sorted(sent)
    ready = w.ready_ts(sent, [], now)
    assert ready >= now
    in_window = [t for t in sent if ready - 60 < t <= ready]
    assert len(in_window) < 20


def test_rate_window_floor_and_backoff():
    assert RateWindow().floor_s(20) == 0 and RateWindow().floor_s(21) == 60 and RateWindow().floor_s(200) == 540
    assert RateWindow().ready_ts([], [100], 110) == 160
    delays = [backoff_s(n, 5, 300, 0.999) for n in range(1, 12)]
    assert delays == sorted(delays) and max(delays) == 300
    assert backoff_s(3, 5, 300, 0.0) == 10 and backoff_s(3, 5, 300, 0.999) == 20


def test_config_routes_first_match_and_continue():
    cfg = parse_config({
        "channels": {"oncall": {"type": "wecom", "key_env": "K1", "msgtype": "text",
                                "mentioned_mobile_list": ["13800001111"]},
                     "ops": {"type": "wecom", "key_env": "K2"},
                     "hook": {"type": "webhook", "url_env": "HOOK"},
                     "file": {"type": "log_file", "path": "alerts.log"}},
        "routes": [{"channels": ["file"], "continue": True},
                   {"campaign": ["818-*"], "severity": "critical", "channels": ["oncall"]},
                   {"guard": ["stale"], "channels": ["hook"]},
                   {"channels": ["ops"]}]})

    def ev(campaign, severity, guard="roi"):
        return AlertEvent(AlertKind.GUARD_TRIPPED, severity, T, campaign_id=campaign, guard=guard)
    assert cfg.route(ev("818-shoes", "critical")) == ("file", "oncall")
    assert cfg.route(ev("818-shoes", "warning")) == ("file", "ops")
    assert cfg.route(ev("618-x", "warning", guard="stale")) == ("file", "hook")
    assert cfg.channels["oncall"].max_bytes == 2048 and cfg.channels["ops"].max_bytes == 4096


@pytest.mark.parametrize("doc, where", [
    ({"channels": {"ops": {"type": "wecom"}}}, "channels.ops.key_env"),
    ({"channels": {"ops": {"type": "wecom", "key_env": "K", "key": "abc"}}}, "channels.ops"),
    ({"channels": {"ops": {"type": "sms"}}}, "channels.ops.type"),
    ({"channels": {"ops": {"type": "log_file", "path": "x", "language": "fr"}}}, "channels.ops.language"),
    ({"channels": {"ops": {"type": "log_file", "path": "x"}}, "routes": [{"channels": ["nope"]}]},
     "routes[0].channels"),
    ({"channels": {"ops": {"type": "log_file", "path": "x", "group_wait": 3}}}, "channels.ops.group_wait"),
    ({"channels": {}}, "channels"),
    ({"channels": {"ops": {"type": "log_file", "path": "x"}}, "routes": [{"channels": ["ops"], "severity": "critical"}]},
     "routes[0]"),
    ({"channels": {"ops": {"type": "wecom", "key_env": "K", "mentioned_mobile_list": ["138"]}}}, "channels.ops.msgtype"),
    ({"channels": {"ops": {"type": "wecom", "key_env": "K", "timeout_s": 40}}}, "delivery.lease_s"),
])
def test_config_errors_name_the_setting(doc, where):
    with pytest.raises(InvalidValue) as e:
        parse_config(doc)
    assert e.value.field == where
    assert "abc" not in str(e.value)


def test_response_times_per_day_and_promotion():
    day = 86400
    # fired at T+k*60 on one day: acked after 10, 20, ..., 100 min; every second one resolved after 2 h
    recs = [record(i, occurred_ts=T, acked_ts=T + 600 * i, resolved_ts=T + 7200 if i % 2 else None)
            for i in range(1, 11)]
    recs.append(record(99, occurred_ts=T + day))  # next day, never acked
    recs.append(record(1, channel="file", acked_ts=None))  # same event on a second channel: counted once
    recs.append(record(50, kind=AlertKind.GUARD_RESTORED))  # a resolution needs no ack
    stats = response_times_by_day(recs)
    assert [s.alerts for s in stats] == [10, 1]
    first = stats[0]
    assert first.acked == 10 and first.ack_median_s == 3300.0  # median of 600..6000 step 600
    assert first.ack_p90_s == pytest.approx(600 * (1 + 0.9 * 9))
    assert first.resolved == 5 and first.resolve_median_s == 7200.0
    assert stats[1].ack_median_s is None
    promos = response_times_by_promotion(recs, [Promotion("818", T - 10, T + 10), Promotion("none", 0, 1)])
    assert promos[0].alerts == 10 and promos[1].alerts == 0


def test_the_documented_example_config_is_valid():
    import re
    import tomllib
    from pathlib import Path
    doc = (Path(__file__).resolve().parents[1] / "docs" / "ALERTS.md").read_text(encoding="utf-8")
    [example] = re.findall(r"```toml\n(.*?)```", doc, flags=re.S)
    cfg = parse_config(tomllib.loads(example))
    assert set(cfg.channels) == {"ops", "oncall", "hook", "file", "replenishment"}
    assert cfg.promotions[0].name == "818" and cfg.channels["replenishment"].repeat_interval_s == 86400
    ev = AlertEvent(AlertKind.GUARD_TRIPPED, "critical", T, campaign_id="818-shoes", guard="roi")
    assert cfg.route(ev) == ("file", "oncall", "ops")
    low = AlertEvent(AlertKind.LOW_STOCK, "warning", T, campaign_id="818-shoes", guard="low_stock")
    assert cfg.route(low) == ("file", "replenishment")  # the replenishment group only, and the log
    pending = AlertEvent(AlertKind.OVERRIDE_PENDING, "warning", T, campaign_id="c1", guard="override")
    assert cfg.route(pending) == ("file", "oncall") and cfg.people["olivia"].mobile == "13800002222"


def test_due_reminders_only_for_unacked_delivered_conditions_past_the_interval():
    hour = {"ops": 3600, "file": 600}.__getitem__
    open_ = [OpenAlert("ops", 1, T, False, "roi:c1"), OpenAlert("ops", 2, T + 3000, False, "roi:c1"),  # newest: 2
             OpenAlert("file", 3, T, False, "roi:c1"),
             OpenAlert("ops", 4, T, False, "roi:c2", delivered=False),   # still on its way (or dead)
             OpenAlert("ops", 5, T, False, "roi:c3"), OpenAlert("file", 6, T, True, "roi:c3")]  # acked
    assert due_reminders(open_, hour, T + 3599) == {"file": (3,)}
    assert due_reminders(open_, hour, T + 6600) == {"ops": (2,), "file": (3,)}


def test_reminders_of_a_channel_go_together_most_severe_first():
    hour = {"ops": 3600}.__getitem__
    open_ = [OpenAlert("ops", 1, T, False, "roi:c1", severity="warning"),
             OpenAlert("ops", 2, T + 1700, False, "roi:c2", severity="critical"),
             OpenAlert("ops", 3, T + 2000, False, "roi:c3", severity="critical"),
             OpenAlert("ops", 4, T - 9000, False, "roi:c4", reminded_ts=T + 3000)]  # reminded lately
    # c1 is due; c2 was told more than half an interval ago and goes with it, c3 and c4 wait
    assert due_reminders(open_, hour, T + 3600) == {"ops": (2, 1)}
    assert due_reminders(open_, hour, T + 3599) == {}


def test_a_storm_in_one_message_says_how_many_more_in_both_languages():
    alerts = [record(i) for i in range(1, 151)]
    for style, limit in ((Style("both", "markdown", "https://p.example"), 4096),
                         (Style("both", "text", "https://p.example"), 2048)):
        text = render(alerts, "ops-1", style, repeat_of="ops-0", max_bytes=limit)
        assert len(text.encode()) <= limit
        zh_more = int(re.search(r"……另有 (\d+) 条", text).group(1))
        en_more = int(re.search(r"… and (\d+) more", text).group(1))
        assert zh_more + sum(1 for line in text.splitlines() if "ROI 守护熔断" in line) == 150
        assert en_more + sum(1 for line in text.splitlines() if "ROI guard tripped" in line) == 150
        assert text.count("https://p.example/alerts?alert=1") == 2 and "ref ops-1 · " in text
        assert "重发：ref ops-0" in text and "Repeat of ref ops-0" in text


@pytest.mark.parametrize("fmt, limit", [("markdown", 4096), ("text", 2048)])
def test_a_long_single_alert_gives_way_in_its_body_only(fmt, limit):
    detail = {"zh": "出价说明。" * 2000, "en": "Bid explanation. " * 1000}
    big = record(7, payload={**record().payload, "detail": detail}, repeats=3)
    text = render([big], "ops-7", Style("both", fmt, "https://p.example"), repeat_of="ops-6", max_bytes=limit)
    assert len(text.encode()) <= limit
    assert text.count("https://p.example/alerts?alert=7") == 2 and "ref ops-7 · " in text
    assert "ROI 守护熔断" in text and "ROI guard tripped" in text and "c007" in text
    assert "重发：ref ops-6" in text and "Repeat of ref ops-6" in text
    assert len(text.encode()) > limit - 16, "the detail is cut to the room left, not dropped"
    assert "说明：出价说明。" in text and "Detail: Bid explanation." in text and "Competitor bid -0.420" in text


@given(st.integers(min_value=1, max_value=60), st.integers(min_value=0, max_value=20_000),
       st.sampled_from(["zh", "en", "both"]), st.sampled_from([("markdown", 4096), ("text", 2048), ("markdown", 700)]))
def test_fitted_messages_always_keep_what_must_stay(n, detail_len, language, fmt_limit):
    fmt, limit = fmt_limit
    alerts = [record(i, payload={**record().payload, "detail": "说" * detail_len}) for i in range(1, n + 1)]
    text = render(alerts, "ops-1", Style(language, fmt, "https://p.example"), max_bytes=limit)
    assert len(text.encode()) <= limit
    langs = 2 if language == "both" else 1
    assert text.count("https://p.example/alerts?alert=1") == langs and "ref ops-1 · " in text
