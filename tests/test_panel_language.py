"""Every page, for every role, reads in the person's language: no raw keys, codes, enum names, JSON or
"None".

Each role walks each page it may see (every view of the explorer, every tab of the overrides and guards
pages, a proposal waiting, one decided, a tripped campaign, the alerts, the audit trail) in Chinese and in
English, and everything the page shows is scanned: text, labels, options, placeholders, tooltips, table
headers and cells, chart titles and legends. In Chinese an ASCII word that is not data (a campaign's
name, a user name, a model version, a hash) is an untranslated string; in English, a code or a Chinese
word that is not data is.
"""

from __future__ import annotations

import pytest
from launch_support import FAILING, gate_report, register
from panel_support import Panel, data_words, room_for, seeded_control, untranslated

from control.domain import OverrideField, OverrideStatus

ROLES_PAGES = {
    "operator": ["board", "explorer", "overrides", "guards", "alerts", "launch"],
    "engineer": ["board", "explorer", "guards", "alerts", "stress", "launch"],
    "manager": ["board", "explorer", "overrides", "guards", "alerts", "audit", "stress", "launch"],
    "admin": ["board", "explorer", "overrides", "guards", "alerts", "audit", "stress", "launch"],
}
EXPLORER_VIEWS = ("decision", "compare", "global", "model")
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    control, seeded, clock = seeded_control(tmp_path_factory.mktemp("language"))
    users = {u.username: u for u in control.users()}
    # A proposal waiting, one approved (its proposer is told), one expired unreviewed.
    waiting = control.propose_override(users["operator2"], campaign_id=seeded.campaigns[2], audience_package="beauty",
                                       field=OverrideField.BID, value=1.5, reason="竞品加价，先稳住出价",
                                       expires_ts=clock() + 3600)
    decided = control.propose_override(users["operator"], campaign_id=seeded.campaigns[3], audience_package=None,
                                       field=OverrideField.AUDIENCE_ON, value=0.0, reason="库存不足",
                                       expires_ts=clock() + 7200)
    control.approve_override(users["manager"], decided.override_id, decided.version, "同意")
    control.propose_override(users["operator"], campaign_id=seeded.campaigns[4], audience_package=None,
                             field=OverrideField.BUDGET, value=30_000.0, reason="晚高峰加预算",
                             expires_ts=clock() + 60)
    clock.advance(120)
    control.expire_overrides()
    assert control.overrides([OverrideStatus.PROPOSED]) == [waiting]
    # The launch page: a version launched, another gated with a failing verdict and its request waiting.
    register(control.engine, "roi-v2", "gmv-v3")
    room = room_for(control)
    room.launches.record_gate(users["engineer"], "roi-v2", gate_report("roi-v2", prior={"k": 0.97, "orders": 150.0}))
    first = room.request_launch(users["engineer"], "roi-v2", "校准良好")
    room.approve_launch(users["manager"], first.launch_id, first.version, "同意")
    room.launches.record_gate(users["engineer"], "gmv-v3", gate_report("gmv-v3", "fail", FAILING))
    room.request_launch(users["engineer"], "gmv-v3", "大促前试运行")
    return control, seeded, clock


def _walk_page(panel: Panel, page: str, seeded) -> list[str]:
    texts = []
    if page == "explorer":
        panel.at.session_state["explore_campaign"] = seeded.tripped[0]
        panel.open(page)
        if not panel.at.get("button_group"):  # no raw explanations for this role: the reasons in words only
            return panel.rendered()
        for view in EXPLORER_VIEWS:
            panel.at.get("button_group")[0].set_value(view)
            panel.run()
            texts += panel.rendered()
        return texts
    panel.open(page)
    if page == "guards":
        panel.at.selectbox(key="gd_campaign").set_value(seeded.tripped[0])
        panel.run()
    return panel.rendered()


@pytest.mark.parametrize("lang", ["zh", "en"])
@pytest.mark.parametrize("role", sorted(ROLES_PAGES))
def test_every_page_reads_in_the_users_language(store, role, lang):
    control, seeded, _ = store
    panel = Panel(control).login(role)
    if lang == "en":
        panel.at.radio(key="lang_choice").set_value("en")
        panel.run()
    data = data_words(control)
    found = {}
    for page in ROLES_PAGES[role]:
        texts = _walk_page(panel, page, seeded)
        assert texts, page
        bad = untranslated(texts, lang, data)
        if bad:
            found[page] = sorted(set(bad))[:12]
    assert not found, found
