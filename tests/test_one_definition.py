"""One definition per concept: what is derived from it agrees with it, and with the store the
migrations build."""

from __future__ import annotations

import math

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from hypothesis import given
from hypothesis import strategies as st

from api import models as api_models
from app import ingest
from control import rows, validation
from control.domain import Campaign, InvalidValue, OverrideField
from control.overrides import OverrideBounds, check_bounds, value_range
from store import repo, schema


def test_the_migrated_store_has_exactly_the_tables_the_code_reads(engine):
    """store.schema (with the row columns from control.rows) against what the migrations built: no
    table, column, type, nullability or index differs."""
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), schema.metadata)
    assert diff == []


@pytest.mark.parametrize("kind,table,api_model", [
    (ingest.Kind.DECISION, schema.decisions, api_models.DecisionRow),
    (ingest.Kind.OUTCOME, schema.outcomes, api_models.OutcomeRow),
    (ingest.Kind.COMPETITOR_PRICE, schema.competitor_prices, api_models.CompetitorPriceRow),
    (ingest.Kind.STOCK, schema.stock_levels, api_models.StockRow)])
def test_every_place_that_names_the_row_fields_reads_them_from_control_rows(kind, table, api_model):
    spec = ingest.SPECS[kind]
    fields = spec.fields
    names = rows.names(fields)
    assert set(names) <= set(table.columns.keys())
    required = [n for n, f in api_model.model_fields.items() if f.is_required()]
    assert required == [f.name for f in fields if f.required]
    assert list(api_model.model_fields) == list(names)
    assert spec.all_columns == {f.name: f.kind for f in fields}
    write = {ingest.Kind.DECISION: repo.DECISION_WRITE_COLUMNS, ingest.Kind.OUTCOME: repo.OUTCOME_WRITE_COLUMNS}
    assert write.get(kind, names)[: len(names)] == names
    assert spec.table in (None, table)  # a feed is written to its own table


def test_validation_reads_the_choices_of_a_field_from_its_definition():
    import pandas as pd

    row = {f.name: v for f, v in zip(rows.DECISION_FIELDS, ("c1", "p1", 0, "v1", None, 1.0, 0.1, True, 0.01,
                                                             0.02, 3.0, 2.0, None, None, None, "the_pool", "",
                                                             None), strict=True)}
    [refusal] = validation.validate_decisions(pd.DataFrame([row]), 0).refused
    assert refusal.field == "decided_by" and "model, guard, rule_pool or override" in refusal.reason


CAMPAIGN = Campaign("c1", "n", "beauty", daily_budget=1000.0, budget_cap=3000.0, avg_order_value=100.0,
                    gross_margin=0.3)


@given(field=st.sampled_from(list(OverrideField)), value=st.floats(-10, 5000, allow_nan=False),
       model_bid=st.one_of(st.none(), st.floats(0, 40)))
def test_the_range_a_form_offers_is_the_range_the_core_accepts(field, value, model_bid):
    bounds = OverrideBounds()
    low, high = value_range(field, model_bid=model_bid, campaign=CAMPAIGN, bounds=bounds)
    if field is OverrideField.AUDIENCE_ON:
        inside = value in (0.0, 1.0)
    elif field is OverrideField.BUDGET:
        inside = low < value <= high
    else:
        inside = low <= value <= high
    try:
        check_bounds(field, value, model_bid=model_bid, campaign=CAMPAIGN, bounds=bounds)
        accepted = True
    except InvalidValue:
        accepted = False
    assert accepted == inside and math.isfinite(high)


def test_the_audit_trail_is_read_through_a_permission_the_core_checks(control):
    from app.wiring import control_room
    from control.domain import Role, User
    from control.permissions import PermissionDenied

    room = control_room(control)
    control.add_user(None, "mia", "Mia", Role.MANAGER, "a long password")
    for role in (Role.OPERATOR, Role.ENGINEER):
        with pytest.raises(PermissionDenied):
            room.audit_trail(User("x", "X", role))
    with pytest.raises(PermissionDenied):
        room.audit_trail(User("mia", "Mia", Role.MANAGER, active=False))
    report, entries = room.audit_trail(User("mia", "Mia", Role.MANAGER))
    assert report.ok and [e.action for e in entries] == ["user.add"]
    with pytest.raises(PermissionDenied):
        room.latest_bucket(User("gone", "Gone", Role.OPERATOR, active=False))
