"""One message catalogue, two languages: the same keys, the same placeholders, every used key present."""

from __future__ import annotations

import re
import string
from pathlib import Path

from app.stress_jobs import PHASES
from control.domain import DecidedBy, GuardAction, GuardMode, OverrideField, OverrideStatus, Role
from control.gate import GateThresholds, Verdict
from control.launch import LaunchStatus, VersionStatus
from control.permissions import Action
from guards.handlers import LOSS_METHODS
from guards.pool_store import ACTIVE, REFUSED, SUPERSEDED
from guards.thresholds import EDITABLE, FROM_ALL, FROM_CAMPAIGN, FROM_FILE
from panel import i18n
from panel.app import PAGES
from panel.views import launch, review
from panel.views.guards import FIGURES

PANEL = Path(__file__).resolve().parent.parent / "panel"
STATIC_KEY = re.compile(r'(?:ctx\.t|translate\([^,()]+,)\s*\(?\s*"([a-z_]+\.[a-z_0-9]+)"')
DYNAMIC_PREFIX = re.compile(r't\(f"([a-z_]+\.[a-z_]*)\{')


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_both_languages_have_the_same_keys_and_placeholders():
    assert set(i18n.ZH) == set(i18n.EN)
    for key in i18n.ZH:
        assert _placeholders(i18n.ZH[key]) == _placeholders(i18n.EN[key]), key
        assert i18n.ZH[key].strip() and i18n.EN[key].strip(), key


def test_every_key_the_pages_use_exists():
    sources = "\n".join(p.read_text(encoding="utf-8") for p in PANEL.rglob("*.py"))
    used = set(STATIC_KEY.findall(sources))
    assert len(used) > 150  # the pattern really finds the pages' keys
    dynamic = {
        "role.": [r.value for r in Role], "action.": [a.value for a in Action],
        "decided.": [d.value for d in DecidedBy], "guard.": [m.value for m in GuardMode],
        "field.": [f.value for f in OverrideField], "page.": list(PAGES),
        "series.": ["predicted", "realised", "rule_pool_predicted"],
        "ex.tab_": ["decision", "compare", "global", "model"],
        "gd.outbox_": ["pending", "delivered", "dead"],
        "gd.ask_force_": ["pool", "model", "auto"], "gd.force_": ["pool", "model", "auto"],
        "st.source_": ["shipped", "upload"], "st.variant_": ["scenario", "roi", "gmv"],
        "st.phase_": list(PHASES), "st.method_": ["guarded_arm", "own_arm", "model_arm"],
        "st.action_": [a.value for a in GuardAction], "gd.loss_method_": list(LOSS_METHODS),
        "rv.": list(review.TABLES),
        "gd.th_guard_": list(EDITABLE), "gd.th_scope_": ["all", "campaign"],
        "gd.th_source_": [FROM_FILE, FROM_ALL, FROM_CAMPAIGN], "th.": sorted({n for v in EDITABLE.values() for n in v}),
        "au.problem_": ["missing", "link", "unsigned", "no_key", "other_key", "contents", "anchor", "truncated"],
        "ex.variant_": ["roi", "gmv"],
        "hold_action.": [a.value for a in GuardAction], "hold.kill_": ["global", "campaign"],
        "status.": [s.value for s in OverrideStatus], "ov.tab_": ["propose", "queue", "active", "mine"],
        "ov.amount_": ["bid", "budget"],
        "fieldname.": [], "invalid.": [],  # shown by name only when the catalogue has it (panel.ui.invalid_text)
        "st.kind_": [],  # shown by name only when the catalogue has it (the stress report's codes)
        "figure.": list(FIGURES),
        "pool.": [ACTIVE, SUPERSEDED, REFUSED],
        "metric.": [],  # shown only when the catalogue has the metric's name (panel/views/explorer.py)
        "la.status_": [v.value for v in VersionStatus], "la.launch_": [v.value for v in LaunchStatus],
        "la.verdict_": [v.value for v in Verdict], "la.arm_": list(launch.ARMS),
        "la.phase_": [*launch.GATE_PHASES, "failed"], "la.th_": list(launch.THRESHOLDS),
    }
    prefixes = set(DYNAMIC_PREFIX.findall(sources))
    assert prefixes == set(dynamic)  # every computed key's prefix is enumerated here
    for prefix in prefixes:
        used |= {prefix + v for v in dynamic[prefix]}
    missing = sorted(k for k in used if k not in i18n.ZH)
    assert not missing
    assert set(launch.THRESHOLDS) == set(GateThresholds().as_json())  # every gate threshold is shown


def test_translate_formats_and_refuses_unknown_keys():
    assert i18n.translate("en", "board.acked", id=7) == "Alert 7 acknowledged."
    assert i18n.translate("zh", "board.acked", id=7) == "告警 7 已确认。"
    try:
        i18n.translate("en", "no.such_key")
    except KeyError:
        return
    raise AssertionError("an unknown key must raise")


def test_a_trip_reason_missing_a_figure_reads_a_dash_and_a_new_cause_reads_in_words():
    from app.board import HoldReason
    from panel.ui import Ctx
    from panel.views.guards import event_detail
    from panel.views.live import hold_text

    for lang in ("zh", "en"):
        ctx = Ctx(room=None, user=None, lang=lang, session=None)  # the wording needs only the catalogue
        said = hold_text(ctx, HoldReason("roi", "tripped", "model_calibration", {"floor": 2.0}, None, "bid_cut", 0.7))
        assert "—" in said and "2.00" in said and "0.70" in said
        assert i18n.translate(lang, "cause.other") in hold_text(ctx, HoldReason("roi", "tripped", "brand_new", {},
                                                                                None, "pool"))
        detail = event_detail(ctx, {"mode_before": "model", "mode_after": "tripped", "cause": "model_calibration",
                                    "figures": {"floor": 2.0}})
        assert "—" in detail and "model_calibration" not in detail
