"""Settings: every one has a default and an environment variable.

`Settings` is the single list; the README's configuration table and
`bidlens config` are made from it (tests/test_config.py keeps the README true).
Secrets are marked and never printed.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from control.domain import InvalidValue


def setting(default, env: str, doc: str, *, secret: bool = False):
    return field(default=default, metadata={"env": env, "doc": doc, "secret": secret})


@dataclass(frozen=True)
class Settings:
    data_dir: str = setting("./data", "BIDLENS_DATA_DIR",
                            "Folder for the embedded store, models, reports and the worker lock.")
    db_url: str = setting("", "BIDLENS_DB_URL",
                          "SQLAlchemy URL of the store. Empty: SQLite file DATA_DIR/bidlens.db (WAL). "
                          "PostgreSQL: postgresql+psycopg://user:pass@host:5432/bidlens", secret=True)
    panel_port: int = setting(8501, "BIDLENS_PANEL_PORT", "Port of the Streamlit panel.")
    panel_url: str = setting("http://localhost:8501", "BIDLENS_PANEL_URL",
                             "Public URL of the panel, used in alert links.")
    api_port: int = setting(8600, "BIDLENS_API_PORT", "Port of the bidder HTTP API.")
    demo_speed: float = setting(60.0, "BIDLENS_DEMO_SPEED",
                                "Demo clock: simulated seconds per real second (60 = a minute per second).")
    demo_password: str = setting("", "BIDLENS_DEMO_PASSWORD",
                                 "Password for the demo users made by `bidlens init --demo-users`; "
                                 "empty: a random one each, printed once.", secret=True)
    session_timeout_min: float = setting(60.0, "BIDLENS_SESSION_TIMEOUT_MIN",
                                         "Panel sessions end after this many idle minutes (a page opened, an "
                                         "action; a board refreshing by itself is idle).")
    password: str = setting("", "BIDLENS_PASSWORD",
                            "The password of the person a command acts as (`--user`, `--by`), for scripts; "
                            "empty: the command asks at a terminal.", secret=True)
    login_max_failures_per_source: int = setting(
        30, "BIDLENS_LOGIN_MAX_FAILURES_PER_SOURCE",
        "Failed logins one source (a browser's address, a CLI host) may make in 15 minutes, whatever the "
        "usernames; then it waits.")
    audit_key_file: str = setting(
        "", "BIDLENS_AUDIT_KEY_FILE",
        "File of the key that signs the audit trail (made on first use, mode 0600, never printed); every "
        "process of a store needs the same one. Empty: next to a SQLite store, or DATA_DIR/audit.key. Keep it "
        "where the database's writers cannot read it (docs/ARCHITECTURE.md, threat model).")
    audit_anchor_file: str = setting(
        "", "BIDLENS_AUDIT_ANCHOR_FILE",
        "Append-only log of the audit trail's end, written outside the store by the guard worker each tick "
        "and by `bidlens audit verify`, which compares it. Empty: next to a SQLite store, or in DATA_DIR.")
    max_bid_multiple: float = setting(3.0, "BIDLENS_MAX_BID_MULTIPLE",
                                      "An override bid may be at most this many times the model's bid.")
    max_bid: float = setting(50.0, "BIDLENS_MAX_BID",
                             "Absolute cap on any override bid, yuan per click.")
    max_override_hours: int = setting(168, "BIDLENS_MAX_OVERRIDE_HOURS",
                                      "The longest an override may be proposed for, hours.")
    alerts_config: str = setting("", "BIDLENS_ALERTS_CONFIG",
                                 "TOML file of alert channels (WeCom robots, webhook, log file) and routes; "
                                 "keys come from the environment variables it names. Empty: alerts go to "
                                 "DATA_DIR/alerts.log. See docs/ALERTS.md.")
    guard_config: str = setting("", "BIDLENS_GUARD_CONFIG",
                                "TOML file overriding guards/guard_defaults.toml (also per campaign); "
                                "empty: the defaults.")
    guard_interval_s: int = setting(60, "BIDLENS_GUARD_INTERVAL_S",
                                    "The guard worker evaluates every this many seconds of its clock.")
    guard_lease_s: int = setting(30, "BIDLENS_GUARD_LEASE_S",
                                 "Real seconds a guard worker's lease lasts past its last renewal (renewed every "
                                 "third of it): a second worker takes over this long after the first stops.")
    api_max_batch_rows: int = setting(10_000, "BIDLENS_API_MAX_BATCH_ROWS",
                                      "Most rows in one POST to the bidder API (413 beyond).")
    api_max_body_mb: int = setting(16, "BIDLENS_API_MAX_BODY_MB",
                                   "Largest request body the bidder API reads, MiB (413 beyond).")
    policy_window_s: int = setting(3600, "BIDLENS_POLICY_WINDOW_S",
                                   "The policy lists slots with a model decision this recent (seconds "
                                   "before the server's clock).")
    max_future_s: int = setting(300, "BIDLENS_MAX_FUTURE_S",
                                "A decision's or an outcome's time (bucket_ts, known_ts) may be at most this many "
                                "seconds ahead of the server's clock; later ones are refused.")
    ingest_memory_mb: int = setting(256, "BIDLENS_INGEST_MEMORY_MB",
                                    "Memory budget of file ingestion, MiB: sets the chunk size.")

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{Path(self.data_dir).resolve() / 'bidlens.db'}"

    def public_items(self) -> dict[str, object]:
        """Every setting with secrets redacted: safe to print or show."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = "***" if f.metadata["secret"] and value else value
        return out


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    values = {}
    for f in dataclasses.fields(Settings):
        raw = environ.get(f.metadata["env"])
        if raw is None or raw == "":
            continue
        kind = type(f.default)
        try:
            values[f.name] = kind(raw)
        except ValueError:
            shown = "***" if f.metadata["secret"] else raw
            raise InvalidValue(f.metadata["env"], shown, f"must be a {kind.__name__}") from None
    return Settings(**values)
