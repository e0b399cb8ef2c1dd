"""WeCom alerts that are never lost: the event contract, the outbox, channels and figures.

Public interface (see docs/ALERTS.md):
- AlertEvent, AlertKind, Severity: what a guard reports.
- enqueue_alert(conn, event, now_ts): in the caller's transaction.
- deliver_due(engine, channels, clock, rng) -> DeliveryReport: one delivery pass;
  deliver_until(stop, ...): passes every few seconds (the guard worker's sender thread).
- build_channels(config), load_config(path), current_config(): channels from the TOML config.
- acknowledge, list_alerts, response_times_by_day / _by_promotion: for the panel and CLI.
"""

from guards.alerts.channels import Channels, build_channels
from guards.alerts.config import AlertsConfig, load_config
from guards.alerts.core import AlertRecord
from guards.alerts.events import AlertEvent, AlertKind, Severity
from guards.alerts.metrics import ResponseStats, response_times_by_day, response_times_by_promotion
from guards.alerts.outbox import (
    AckResult,
    DeliveryReport,
    EnqueueResult,
    acknowledge,
    current_config,
    deliver_due,
    deliver_until,
    enqueue_alert,
    get_alert,
    list_alerts,
)

__all__ = [
    "AckResult", "AlertEvent", "AlertKind", "AlertRecord", "AlertsConfig", "Channels", "DeliveryReport",
    "EnqueueResult", "ResponseStats", "Severity", "acknowledge", "build_channels", "current_config",
    "deliver_due", "deliver_until", "enqueue_alert", "get_alert", "list_alerts", "load_config", "response_times_by_day",
    "response_times_by_promotion",
]
