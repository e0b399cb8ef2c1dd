from pathlib import Path

import pytest

from sim.scenario import (
    ScenarioError,
    dump_scenario,
    load_scenario,
    load_scenario_file,
    parse_scenario,
    shipped_scenarios,
)


def test_the_promised_scenarios_are_shipped():
    assert {"normal", "818", "price-war", "stockout", "data-outage", "drift", "demo"} <= set(shipped_scenarios())


@pytest.mark.parametrize("name", shipped_scenarios())
def test_every_shipped_scenario_round_trips_through_its_file_format(name, tmp_path):
    scenario = load_scenario(name)
    path = tmp_path / f"{name}.toml"
    path.write_text(dump_scenario(scenario), encoding="utf-8")
    again = load_scenario_file(path)
    assert again == type(scenario)(**{**scenario.__dict__, "source": str(path)})


def test_818_serves_the_gmv_variant_and_demo_switches_to_it_five_minutes_in():
    assert load_scenario("818").variant_at(0) == "gmv"
    demo = load_scenario("demo")
    assert (demo.variant_at(4), demo.variant_at(5)) == ("roi", "gmv")


BAD = [
    ('name = "x"\n[world]\ntraffic_scal = 1.0\n', "world.traffic_scal", "1.0"),
    ('name = "x"\n[world]\nctr_noise = -0.1\n', "world.ctr_noise", "-0.1"),
    ('name = "x"\n[[events]]\nkind = "cvr_shift"\nat_minute = 1500\nfactor = 0.5\n', "events[0].at_minute", "1500"),
    ('name = "x"\n[[events]]\nkind = "stockout"\nat_minute = 10\ncampaigns = ["c01", "c99"]\n',
     "events[0].campaigns[1]", "'c99'"),
    ('name = "x"\n[[events]]\nkind = "cvr_shift"\nat_minute = 10\nfactor = -2\n', "events[0].factor", "-2"),
    ('name = "x"\n[[events]]\nkind = "cvr_shift"\nat_minute = 10\nuntil_minute = 5\nfactor = 0.5\n',
     "events[0].until_minute", "5"),
    ('name = "x"\n[[events]]\nkind = "stockout"\nat_minute = 10\ncampaigns = ["c01"]\nfactor = 2.0\n',
     "events[0].factor", "2.0"),
    ('name = "x"\n[[events]]\nkind = "meteor"\nat_minute = 10\n', "events[0].kind", "'meteor'"),
    ('name = "x"\n[bidder]\nvariant = "cpa"\n', "bidder.variant", "'cpa'"),
    ('name = "x"\n[world]\nlag_shares = [0.5, 0.6]\nlag_minutes = [0, 10]\n', "world.lag_shares", "[0.5, 0.6]"),
]


@pytest.mark.parametrize(("text", "key", "value"), BAD)
def test_a_bad_scenario_file_is_refused_naming_file_key_and_value(tmp_path, text, key, value):
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError) as caught:
        load_scenario_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {key} = {value}:"), message


def test_a_scenario_that_is_not_toml_is_refused_with_its_file_named(tmp_path):
    path = Path(tmp_path) / "broken.toml"
    path.write_text("name = \n", encoding="utf-8")
    with pytest.raises(ScenarioError, match="broken.toml"):
        load_scenario_file(path)


def test_an_unknown_shipped_name_lists_the_shipped_ones():
    with pytest.raises(ScenarioError, match="normal"):
        load_scenario("no-such-scenario")


def test_a_campaign_beyond_the_worlds_size_is_unknown():
    with pytest.raises(ScenarioError, match="c07"):
        parse_scenario('name = "x"\n[world]\ncampaigns = 6\n[[events]]\nkind = "stockout"\n'
                       'at_minute = 1\ncampaigns = ["c07"]\n', "inline")


def test_the_cli_lists_the_shipped_scenarios(capsys):
    import json

    from cli.main import main

    assert main(["scenarios", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in listed] == shipped_scenarios()
    assert all(d["description"] for d in listed)


def test_a_shift_can_ramp_in_and_order_values_can_shift():
    from sim.scenario import parse_scenario

    scenario = parse_scenario("""name = "ramp"
[[events]]
kind = "order_value_shift"
at_minute = 600
until_minute = 900
ramp_minutes = 120
factor = 0.5
campaigns = ["c01"]
""")
    [event] = scenario.events
    assert event.factor_at(600) == pytest.approx(1 - 0.5 / 120)
    assert event.factor_at(659) == pytest.approx(0.75) and event.factor_at(719) == event.factor_at(850) == 0.5
    assert parse_scenario(dump_scenario(scenario)).events == scenario.events
    with pytest.raises(ScenarioError, match="ramp_minutes"):
        parse_scenario(dump_scenario(scenario).replace("ramp_minutes = 120", "ramp_minutes = 400"))
