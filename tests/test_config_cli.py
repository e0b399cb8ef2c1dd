import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from control.config import Settings, load_settings
from control.domain import InvalidValue

ROOT = Path(__file__).resolve().parents[1]


def test_readme_documents_every_setting():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    undocumented = [f.metadata["env"] for f in dataclasses.fields(Settings) if f.metadata["env"] not in readme]
    assert undocumented == []


def test_settings_come_from_the_environment_and_bad_values_are_named():
    settings = load_settings({"BIDLENS_MAX_BID": "20", "BIDLENS_DATA_DIR": "/tmp/x"})
    assert settings.max_bid == 20.0 and settings.database_url == "sqlite:////tmp/x/bidlens.db"
    with pytest.raises(InvalidValue, match="BIDLENS_PANEL_PORT='eighty'"):
        load_settings({"BIDLENS_PANEL_PORT": "eighty"})


def test_secrets_are_redacted():
    items = load_settings({"BIDLENS_DB_URL": "postgresql+psycopg://u:hunter2@h/db"}).public_items()
    assert "hunter2" not in json.dumps(items)


def test_bench_json_contract():
    out = subprocess.run([sys.executable, "-m", "cli.main", "bench", "policy.resolve",
                          "store.write_decisions.sqlite", "--quick", "--json", "--no-postgres"],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    results = json.loads(out.stdout)
    assert {r["name"] for r in results} == {"policy.resolve", "store.write_decisions.sqlite"}
    for r in results:
        assert {"name", "value", "unit", "baseline", "baseline_value", "ratio"} <= set(r)
        assert r["value"] > 0 and r["baseline_value"] > 0 and r["ratio"] > 0
