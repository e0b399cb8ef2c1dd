"""The product's main path, end to end, on the real demo stack in a real headless Chromium, in both languages.

`bidlens demo` runs as a user starts it (simulator as the bidder with every
decision explained, guard worker with its alert sender, local WeCom robot,
Streamlit panel), on a promotion clock 60x real time. The "818"-style incident
trips the ROI guard; the robot receives the WeCom message; an operator follows
its link, logs in, lands on that alert (its kind and campaign checked against the
message and the store), acknowledges it, reads the decision's explanation
(checked step for step and reason for reason against `bidlens explain decision`)
and proposes an override (refused until every field is right, in the person's
language); a manager approves it, the tab staying open; the live board says the
campaign is now decided by the override. The same path runs again in English, a
manager runs a short stress test, and an engineer following a link to the audit
page is told it is not theirs. Every page is scanned for untranslated strings
(panel_support.untranslated). Screenshots: artifacts/screenshots/demo_{zh,en}_*.png.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser_support import (
    ROOT,
    TIMEOUT_MS,
    free_port,
    launch,
    login,
    logout,
    main_lines,
    open_page,
    require_browser,
    shot,
    t,
    wait_healthy,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "demo-e2e-password"
SPEED = 60  # simulated seconds per real second: the first trips come within half a minute; faster, a busy
# 2-core machine cannot explain every decision as fast as the clock runs and the guard sees stale data
TRIP = re.compile(r"【严重】ROI 守护熔断</font>\n> 计划：\*\*(c\d+)\*\*.*?\]\((http://[^)]+/alerts\?alert=(\d+))\)",
                  re.S)


def wait_for_trip_message(robot_log: Path, demo: subprocess.Popen, timeout_s: float = 240) -> re.Match:
    """The first single-trip WeCom message the local robot printed: campaign, link, alert id."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if demo.poll() is not None:
            raise RuntimeError(f"bidlens demo exited with {demo.returncode}")
        found = TRIP.search(robot_log.read_text(encoding="utf-8")) if robot_log.exists() else None
        if found:
            return found
        time.sleep(1)  # a real robot process writes this log; nothing to inject
    raise TimeoutError(f"no trip message reached the robot in {timeout_s} s: {robot_log}")


@pytest.fixture
def demo(tmp_path):
    require_browser()
    panel_port, robot_port = free_port(), free_port()
    env = {**os.environ, "BIDLENS_DATA_DIR": str(tmp_path), "BIDLENS_PANEL_PORT": str(panel_port),
           "BIDLENS_DEMO_PASSWORD": PASSWORD, "PYTHONPATH": str(ROOT)}
    for name in ("BIDLENS_DB_URL", "BIDLENS_ALERTS_CONFIG", "BIDLENS_PANEL_URL"):
        env.pop(name, None)
    out = tmp_path / "demo.out"
    with out.open("w", encoding="utf-8") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "demo", "--speed", str(SPEED),
                                 "--robot-port", str(robot_port)], cwd=ROOT, env=env, stdout=sink,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{panel_port}", proc, timeout_s=180, log=out)
        yield proc, tmp_path, panel_port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the demo stops its children on SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _store(data_dir: Path):
    from app.service import Control
    from control.config import Settings
    from store.engine import open_store

    return Control(open_store(f"sqlite:///{data_dir / 'bidlens.db'}"), lambda: int(time.time()),
                   Settings(data_dir=str(data_dir)))


def _scan(page, lang: str, control, where: str) -> None:
    """Fail on anything on the page not in the person's language (panel_support.untranslated)."""
    from panel_support import data_words, untranslated

    bad = untranslated(main_lines(page), lang, data_words(control))
    assert not bad, (where, lang, bad)


def _selected(page, key: str) -> str:
    return page.locator(f".st-key-{key} input").input_value().strip()


def _check_explanation_is_the_clis(page, lang: str, control, data_dir: Path, user: str) -> None:
    """The explanation on the page is what `bidlens explain decision` says about the same decision to the
    same person: step for step for those who may see the raw contributions, reason for reason for all."""
    import json

    from app import explorer
    from sim.catalog import DAY_START_TS

    campaign = _selected(page, "ex_campaign").split(" · ")[0]
    names = {v[0 if lang == "zh" else 1]: k for k, v in control_packages(control).items()}
    package = names[_selected(page, "ex_package")]
    hh, mm = _selected(page, "ex_bucket").split(" ")[1].split(":")
    bucket = DAY_START_TS + int(hh) * 3600 + int(mm) * 60
    with control.engine.connect() as conn:
        decision_id = explorer.find_decision_id(conn, campaign, package, bucket)
    env = {**os.environ, "BIDLENS_DATA_DIR": str(data_dir), "BIDLENS_PASSWORD": PASSWORD}
    env.pop("BIDLENS_DB_URL", None)
    cli = json.loads(subprocess.run([sys.executable, "-m", "cli.main", "explain", "decision", str(decision_id),
                                     "--lang", lang, "--json", "--user", user], cwd=ROOT, env=env,
                                    capture_output=True, text=True, check=True).stdout)
    table = page.locator('[data-testid="stTable"]')
    if "steps" in cli:
        rows = table.first.locator("tbody tr")
        shown = [[c.strip() for c in rows.nth(i).locator("th, td").all_inner_texts()] for i in range(rows.count())]
        expected = [[st["label"], st["shown_value"] or "—", f"{st['value']:+.3f}", f"{st['total']:.3f}"]
                    for st in cli["steps"]]
        assert shown == expected, (decision_id, shown, expected)
    else:  # the raw contributions are not this person's to see, on the page either
        assert table.count() == 0
    reasons = page.locator('[data-testid="stMarkdownContainer"]', has_text=t(lang, "ex.top_reasons")) \
        .locator("li").all_inner_texts()
    assert [r.strip() for r in reasons] == cli["reasons"]


def control_packages(control) -> dict:
    from store import repo

    with control.engine.connect() as conn:
        return {c: (p.name_zh, p.name_en) for c, p in repo.load_audience_packages(conn).items()}


def _propose_refusing_bad_input(page, lang: str, campaign: str, reason: str, control, expect) -> None:
    """The form names what is wrong in the person's language and cannot be submitted with it; what is
    proposed is what was typed."""
    from control.domain import OverrideStatus

    value = page.locator(f".st-key-ov_value_bid_{campaign}_all input")
    hours = page.locator(".st-key-ov_hours input")
    submit = page.locator(".st-key-ov_submit button")
    page.locator(".st-key-ov_reason input").fill(reason)
    page.locator(".st-key-ov_reason input").press("Tab")
    before = {o.override_id for o in control.overrides([OverrideStatus.PROPOSED])}
    for bad_value, bad_hours, said in (
            ("12abc", "4", t(lang, "err.invalid", field=t(lang, "fieldname.value"), value="12abc",
                             reason=t(lang, "invalid.not_a_number"))),
            ("1.50", "0", t(lang, "err.invalid", field=t(lang, "fieldname.hours"), value="0",
                            reason=t(lang, "invalid.hours_range", minimum=1, maximum=168))),
            ("1.50", "-2", t(lang, "invalid.hours_range", minimum=1, maximum=168))):
        value.fill(bad_value)
        value.press("Tab")
        hours.fill(bad_hours)
        hours.press("Tab")
        page.get_by_text(said).first.wait_for()
        expect(submit).to_be_disabled()
        submit.click(force=True)  # a click on the disabled button submits nothing
    shot(page, f"demo_{lang}_override_form_refusing")
    assert {o.override_id for o in control.overrides([OverrideStatus.PROPOSED])} == before
    value.fill("1.37")
    value.press("Tab")
    hours.fill("3")
    hours.press("Tab")
    expect(submit).to_be_enabled()
    shot(page, f"demo_{lang}_override_form")
    submit.click()
    page.get_by_text(t(lang, "ov.proposed")).wait_for()
    [new] = [o for o in control.overrides([OverrideStatus.PROPOSED]) if o.override_id not in before]
    assert (new.scope.campaign_id, new.value, new.expires_ts - new.proposed_ts, new.reason) == \
        (campaign, 1.37, 3 * 3600, reason)


def _path(page, lang: str, campaign: str, control, data_dir: Path, expect) -> None:
    """Operator: explanation (as the CLI says it), an override refused until it is right; manager: the
    queue, approval, the board saying who decides; every page scanned and photographed."""
    open_page(page, t(lang, "page.explorer"))
    expect(page.get_by_text(t(lang, "ex.top_reasons"))).to_be_visible()
    _check_explanation_is_the_clis(page, lang, control, data_dir, "operator")  # the reasons in words
    _scan(page, lang, control, "explorer")
    shot(page, f"demo_{lang}_explanation")
    open_page(page, t(lang, "page.overrides"))
    page.locator(".st-key-ov_campaign input").click()
    page.get_by_role("option", name=re.compile(rf"^{campaign} · ")).click()
    _scan(page, lang, control, "overrides")
    _propose_refusing_bad_input(page, lang, campaign, f"{campaign}: hold the bid ({lang})", control, expect)
    logout(page, lang)

    login(page, "manager", PASSWORD, lang)
    _scan(page, lang, control, "board")
    shot(page, f"demo_{lang}_board")
    open_page(page, t(lang, "page.explorer"))  # a manager sees the steps: the same as the CLI's, step for step
    expect(page.get_by_text(t(lang, "ex.top_reasons"))).to_be_visible()
    _check_explanation_is_the_clis(page, lang, control, data_dir, "manager")
    _scan(page, lang, control, "explorer_detail")
    shot(page, f"demo_{lang}_explanation_steps")
    open_page(page, t(lang, "page.overrides"))
    page.get_by_role("tab", name=t(lang, "ov.tab_queue")).click()
    expect(page.get_by_text(f"{campaign}: hold the bid ({lang})")).to_be_visible()
    _scan(page, lang, control, "queue")
    shot(page, f"demo_{lang}_approval")
    page.get_by_role("button", name=t(lang, "ov.approve")).first.click()
    expect(page.get_by_text(re.compile(re.escape(t(lang, "ov.approved", id=0)).replace("0", r"\d+")))).to_be_visible()
    assert page.get_by_role("tab", name=t(lang, "ov.tab_queue")).get_attribute("aria-selected") == "true"
    open_page(page, t(lang, "page.board"))
    said = t(lang, "board.override_line", campaign=campaign, name="", who="", until="").split("·")[1].strip()
    expect(page.locator("p", has_text=re.compile(rf"{campaign}.*{re.escape(said)}")).first).to_be_visible()
    shot(page, f"demo_{lang}_board_override")
    for name in ("guards", "audit"):
        open_page(page, t(lang, f"page.{name}"))
        _scan(page, lang, control, name)
        shot(page, f"demo_{lang}_{name}")


def test_trip_reaches_wecom_and_a_person_follows_the_link_explains_and_overrides(demo):
    proc, data_dir, panel_port = demo
    message = wait_for_trip_message(data_dir / "demo-robot.log", proc)
    campaign, link, alert_id = message.group(1), message.group(2), message.group(3)
    # The link names the demo's own panel, so a person can follow it from the group chat.
    assert link.startswith(f"http://localhost:{panel_port}/alerts?alert=")
    control = _store(data_dir)
    base = f"http://127.0.0.1:{panel_port}"

    playwright = require_browser()
    expect = playwright.expect
    with playwright.sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page(viewport={"width": 1600, "height": 2000})
        page.set_default_timeout(TIMEOUT_MS)

        page.goto(link.replace("localhost", "127.0.0.1"))
        login(page, "operator", PASSWORD)
        focus = page.locator(".st-key-focused_alert", has_text=f"告警 #{alert_id}")
        expect(focus).to_be_visible()
        said = focus.inner_text()  # the alert the link opened is the one the message was about
        assert campaign in said and "ROI 守护熔断" in said, said
        from guards.alerts.outbox import list_alerts
        from guards.alerts.templates import GUARD_ACTIONS
        with control.engine.connect() as conn:
            [alert] = [a for a in list_alerts(conn, limit=None) if a.alert_id == int(alert_id)]
        assert (alert.kind.value, alert.campaign_id) == ("guard_tripped", campaign)
        # What the guard chose to do with the traffic (rule pool, bid cut or pause), as the alert says it.
        expect(page.get_by_text(f"处理：{GUARD_ACTIONS['zh'][alert.payload['action']]}").first).to_be_visible()
        shot(page, "demo_01_alert_from_wecom")
        page.locator(".st-key-focus_ack button").click()
        expect(page.get_by_text(f"告警 {alert_id} 已确认。")).to_be_visible()
        page.locator(".st-key-focus_explain button").click()
        page.get_by_role("heading", name="决策解释").wait_for()
        _path(page, "zh", campaign, control, data_dir, expect)

        # A manager runs a short stress test; its report is read in both languages.
        open_page(page, "压力测试")
        page.locator(".st-key-st_minutes input").fill("60")
        page.locator(".st-key-st_minutes input").press("Tab")
        page.locator(".st-key-st_run button").click()
        page.get_by_text(t("zh", "st.report", scenario=t("zh", "st.scenario_818"), seed=818)).wait_for(timeout=600_000)
        _scan(page, "zh", control, "stress")
        shot(page, "demo_zh_stress")
        page.get_by_text("English", exact=True).click()
        page.get_by_role("heading", name=t("en", "page.stress")).wait_for()
        _scan(page, "en", control, "stress")
        shot(page, "demo_en_stress")
        logout(page, "en")

        # The same path in English.
        login(page, "operator", PASSWORD, "en")
        open_page(page, t("en", "page.board"))
        _path(page, "en", campaign, control, data_dir, expect)
        logout(page, "en")

        # An engineer following a link to a page of managers is told so, not moved elsewhere in silence.
        page.goto(f"{base}/audit")  # a new browser session: Chinese, the default
        login(page, "engineer", PASSWORD)
        expect(page.get_by_text(t("zh", "app.not_allowed", page=t("zh", "page.audit"),
                                  role=t("zh", "role.engineer")))).to_be_visible()
        browser.close()
