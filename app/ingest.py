"""Ingesting decision, outcome and breaker feed rows from outside (HTTP batches, files).

One path for every source: keep the known columns, refuse values of the wrong
type, validate (control.validation, against the catalogue), then store the good
rows and quarantine the bad ones with the reason in ONE transaction. Nothing is
dropped and nothing half-stored: every input row is either stored or in the
quarantine table, and the counts say so.

Files stream in chunks sized from a memory budget, so a file larger than
memory works: CSV and JSON Lines read line by line in binary (a line that is not
UTF-8, too long or malformed is quarantined, never fatal; CSV cells parsed by
pyarrow), Parquet by record batches. Each chunk stores the file's progress with its
rows, so the same file again stores nothing twice and an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, select

from control import rows
from control.config import Settings
from control.domain import INVISIBLE, InvalidValue
from control.validation import (
    Limits,
    Refusal,
    validate_competitor_prices,
    validate_decisions,
    validate_outcomes,
    validate_stock,
)
from store import repo
from store import schema as s

MAX_MAGNITUDE = 1e15  # beyond exact integers in a float; only a broken sender sends it
DEFAULT_LIMITS = Limits()


def limits_for(settings: Settings) -> Limits:
    """The validation limits a deployment's settings set (BIDLENS_MAX_FUTURE_S)."""
    return Limits(max_future_s=settings.max_future_s)


Enrich = Callable[[pd.DataFrame], pd.DataFrame]
ExplainRows = Callable[[pd.DataFrame], "repo.ExplanationBatch | None"]  # rows of one model version


class Kind(StrEnum):
    DECISION = "decision"
    OUTCOME = "outcome"
    COMPETITOR_PRICE = "competitor_price"  # the competitor price guard's feed
    STOCK = "stock"                        # the safety-stock guard's feed


@dataclass(frozen=True)
class KindSpec:
    fields: tuple[rows.Field, ...]
    validate: Callable[..., object]
    table: object = None  # a feed's table (store.schema); decisions and outcomes have writers of their own

    @property
    def columns(self) -> dict[str, str]:
        return rows.required_kinds(self.fields)

    @property
    def optional(self) -> dict[str, str]:
        return rows.optional_kinds(self.fields)

    @property
    def all_columns(self) -> dict[str, str]:
        return {**self.columns, **self.optional}


SPECS = {
    Kind.DECISION: KindSpec(rows.DECISION_FIELDS, validate_decisions),
    Kind.OUTCOME: KindSpec(rows.OUTCOME_FIELDS, validate_outcomes),
    Kind.COMPETITOR_PRICE: KindSpec(rows.COMPETITOR_PRICE_FIELDS, validate_competitor_prices, s.competitor_prices),
    Kind.STOCK: KindSpec(rows.STOCK_FIELDS, validate_stock, s.stock_levels),
}


@dataclass
class IngestReport:
    """What happened to every row: stored (accepted) or quarantined (refused)."""

    kind: str
    source: str
    received_ts: int
    rows: int = 0
    accepted: int = 0
    refused: int = 0
    chunks: int = 0
    refusals_by_reason: Counter = field(default_factory=Counter)
    first_refusals: list[Refusal] = field(default_factory=list)
    skipped: int = 0  # rows an earlier run of the same file stored (or quarantined) already

    def add(self, accepted: int, refusals: Sequence[Refusal], keep: int = 20) -> None:
        self.rows += accepted + len(refusals)
        self.accepted += accepted
        self.refused += len(refusals)
        self.chunks += 1
        self.refusals_by_reason.update(f"{r.field}: {r.reason}" for r in refusals)
        self.first_refusals.extend(refusals[: max(0, keep - len(self.first_refusals))])

    def as_json(self) -> dict:
        return {"kind": self.kind, "rows": self.rows, "accepted": self.accepted, "refused": self.refused,
                "chunks": self.chunks, "skipped": self.skipped,
                "quarantine": {"table": "quarantine", "kind": self.kind, "source": self.source,
                               "received_ts": self.received_ts},
                "refusals_by_reason": dict(self.refusals_by_reason.most_common()),
                "first_refusals": [refusal_json(r) for r in self.first_refusals]}


def refusal_json(r: Refusal) -> dict:
    """A refusal as a response or report shows it (the value as text: it may be NaN or anything)."""
    return {"index": r.row_index, "field": r.field, "reason": r.reason,
            "value": None if r.value is None else str(r.value)[:200]}


# --- types: JSON values or CSV text into columns the validation understands ------------------

_PLAIN = (int, float, type(None))


def _plain_numbers(values: list) -> np.ndarray | None:
    """The values as floats when every one is a plain int, float or None (the usual batch), else None."""
    if not set(map(type, values)) <= set(_PLAIN):
        return None
    try:
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    except OverflowError:  # an integer too big for a float
        return None


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _as_float(v) -> float:
    try:
        return float(v)
    except OverflowError:  # a JSON integer with hundreds of digits
        return math.inf


_TEXT_BOOL = {"true": True, "1": True, "t": True, "yes": True,
              "false": False, "0": False, "f": False, "no": False}


def _features_cell(v):
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def _clean_text(v) -> bool:
    """Text a store keeps: a string of valid UTF-8 (no lone surrogates) without control or invisible
    characters (NUL, bidi overrides, zero-width: control.validation.INVISIBLE)."""
    return isinstance(v, str) and repo.json_document(v) is v and not INVISIBLE.search(v)


def safe_value(v):
    """A refused value as the quarantine can store it (broken text kept, escaped)."""
    return repo.json_document(v) if isinstance(v, str) else v


def _features_ok(v) -> bool:
    return v is None or (isinstance(v, dict) and len(v) <= 500 and all(
        _clean_text(k) and len(k) <= 64 and _is_number(x) and math.isfinite(_as_float(x))
        for k, x in v.items()))


def _null(col: pd.Series) -> np.ndarray:
    return col.isna().to_numpy(dtype=bool)


def _typed_column(col: pd.Series, kind: str, field: rows.Field, from_text: bool) -> tuple[pd.Series, np.ndarray, str]:
    """(column converted for validation, mask of values of the wrong type, reason)."""
    null = _null(col)
    name = field.name
    if kind == "text":
        limit = field.max_length
        reason = f"must be a string of at most {limit} characters (UTF-8, no control or invisible characters)"
        if from_text:  # every cell is decoded text or empty
            bad = (col.str.len() > limit) | col.str.contains(INVISIBLE, regex=True)
            return col, bad.fillna(False).to_numpy(dtype=bool), reason
        values = col.tolist()
        if set(map(type, values)) <= {str, type(None)}:
            texts = [v for v in values if v is not None]
            if max(map(len, texts), default=0) <= limit and _clean_text("".join(texts)):
                return col, np.zeros(len(values), dtype=bool), reason  # the usual batch: all fine
        ok = np.array([_clean_text(v) and len(v) <= limit for v in values], dtype=bool)
        return col, ~ok & ~null, reason
    if kind == "any" and name == "features":
        col = col.map(_features_cell) if from_text else col
        ok = col.map(_features_ok).to_numpy(dtype=bool)
        return col, ~ok & ~_null(col), "must be an object of finite numbers (at most 500)"
    if kind == "any":
        return col, np.zeros(len(col), dtype=bool), ""
    if kind == "bool":
        if from_text:
            flags = col.str.strip().str.lower().map(_TEXT_BOOL)
            wrong = flags.isna().to_numpy(dtype=bool) & ~null
            return flags.where(~wrong, col).astype(object), wrong, "must be true or false"
        ok = col.map(lambda v: isinstance(v, (bool, np.bool_)) or (_is_number(v) and v in (0, 1)))
        return col, ~ok.to_numpy(dtype=bool) & ~null, "must be true or false"
    if col.dtype.kind in "iuf":
        numbers = col.astype("float64")
        wrong = np.zeros(len(col), dtype=bool)
    elif from_text:
        numbers = pd.to_numeric(col, errors="coerce").astype("float64")
        wrong = numbers.isna().to_numpy(dtype=bool) & ~null
    else:
        values = col.tolist()
        numbers = _plain_numbers(values)
        if numbers is not None:
            wrong = np.zeros(len(values), dtype=bool)
        else:  # some value is not a plain number: look at each
            wrong = np.array([not (_is_number(v) or v is None) for v in values], dtype=bool)
            numbers = np.array([_as_float(v) if _is_number(v) else np.nan for v in values], dtype=np.float64)
            wrong &= ~null
        numbers = pd.Series(numbers, index=col.index, dtype="float64")
    wrong |= np.abs(numbers.to_numpy()) > MAX_MAGNITUDE
    return numbers, wrong, "must be a number"


def records_frame(records: Sequence[dict], kind: Kind) -> pd.DataFrame:
    """JSON objects as a frame of their known fields, values untouched (object columns: no string
    inference, which would fail on text that is not valid UTF-8 before it could be refused)."""
    known = SPECS[Kind(kind)].all_columns
    return pd.DataFrame([{k: v for k, v in r.items() if k in known} for r in records], dtype=object)


def _row_json(frame: pd.DataFrame, i: int) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in frame.iloc[i].to_dict().items()}


def prepare(frame: pd.DataFrame, kind: Kind, *, from_text: bool = False) -> tuple[pd.DataFrame, list[Refusal]]:
    """Known columns only, values of the right type; rows with a wrong-typed value are refused.

    Returns (frame of the rest, refusals); refusal indexes are positions in `frame`.
    """
    spec = SPECS[kind]
    frame = frame.reset_index(drop=True)
    out = {}
    wrong_field = np.full(len(frame), None, dtype=object)
    wrong_reason = np.full(len(frame), None, dtype=object)
    for row_field in spec.fields:
        name, col_kind = row_field.name, row_field.kind
        if name not in frame:
            if row_field.required:
                out[name] = pd.Series([None] * len(frame), dtype=object)
            continue
        col = frame[name]
        col_kind = "text" if row_field.max_length else col_kind  # free text the store keeps in a sized column
        if col_kind in ("text", "bool", "any"):
            col = col.astype(object).where(col.notna(), None)
        converted, wrong, reason = _typed_column(col, col_kind, row_field, from_text)
        new = wrong & (wrong_field == None)  # noqa: E711 - elementwise on an object array
        wrong_field[new] = name
        wrong_reason[new] = reason
        out[name] = converted
    typed = pd.DataFrame(out)
    bad = np.flatnonzero(wrong_field != None)  # noqa: E711
    refusals = [Refusal(int(i), wrong_field[i], frame.at[i, wrong_field[i]], wrong_reason[i],
                        _row_json(frame, i)) for i in bad]
    return typed.drop(index=bad), refusals


_DTYPES = {"ts": "int64", "count": "int64", "money": "float64", "share": "float64", "rate": "float64",
           "bool": bool}


def _normalise(frame: pd.DataFrame, kind: Kind) -> pd.DataFrame:
    """Accepted rows in the store's types (whole seconds and counts as integers), defaults filled."""
    if kind is Kind.DECISION and len(frame):
        fills = {c: v for c, v in rows.defaults(rows.DECISION_FIELDS).items() if c in frame}
        frame = frame.fillna(fills) if fills else frame
        for row_field in rows.DECISION_FIELDS:  # the store's columns are NOT NULL
            if row_field.default_from and row_field.name in frame:
                frame = frame.assign(**{row_field.name: frame[row_field.name].fillna(frame[row_field.default_from])})
    types = {c: _DTYPES[k] for c, k in SPECS[kind].all_columns.items()
             if k in _DTYPES and c in frame and frame[c].notna().all()}
    return frame.astype(types)


# --- one batch: checked outside any transaction, stored in one ------------------------------------

@dataclass(frozen=True)
class CheckedBatch:
    """A batch after the checks: what to store and what to quarantine, nothing written yet."""

    kind: Kind
    parts: list[tuple[pd.DataFrame, repo.ExplanationBatch | None]]  # accepted rows in the store's types
    refusals: list[Refusal]  # positioned, sorted, their values storable

    @property
    def accepted(self) -> int:
        return sum(len(rows) for rows, _ in self.parts)


def check_frame(kind: Kind, frame: pd.DataFrame, *, now_ts: int, known_campaigns: Collection[str] | None,
                known_packages: Collection[str] | None = None, limits: Limits = DEFAULT_LIMITS,
                from_text: bool = False, positions: np.ndarray | None = None,
                extra_refusals: Sequence[Refusal] = (), enrich: Enrich | None = None,
                explain: ExplainRows | None = None,
                servable_versions: Collection[str] | None = None) -> CheckedBatch:
    """Type, validate, complete and explain a batch; nothing is stored.

    Refusal indexes are `positions[i]` for row i of `frame` (default: i), so they can name a row of a
    whole file; `extra_refusals` (already positioned, e.g. malformed lines) join them. `enrich`
    completes accepted decision rows (the rule pool's shadow score); `explain` gives the SHAP values of
    accepted decision rows of one model version (explain.store.explain_registered). `servable_versions`:
    the launch gate's versions whose decisions are accepted (None: any); the others are refused.
    """
    kind = Kind(kind)
    spec = SPECS[kind]
    typed, type_refusals = prepare(frame, kind, from_text=from_text)
    kept_index = typed.index.to_numpy()
    catalogue = {"known_campaigns": known_campaigns}
    if kind in (Kind.DECISION, Kind.OUTCOME):  # feeds name campaigns only
        catalogue["known_packages"] = known_packages
    if kind is Kind.DECISION:
        catalogue["servable_versions"] = servable_versions
    result = spec.validate(typed.reset_index(drop=True), now_ts, limits=limits, **catalogue)
    where = np.arange(len(frame)) if positions is None else np.asarray(positions)
    refusals = [Refusal(int(where[r.row_index]), r.field, r.value, r.reason, r.row) for r in type_refusals]
    refusals += [Refusal(int(where[kept_index[r.row_index]]), r.field, r.value, r.reason, r.row)
                 for r in result.refused]
    refusals = [Refusal(r.row_index, r.field, safe_value(r.value), r.reason, r.row)
                for r in sorted(refusals, key=lambda r: r.row_index) + list(extra_refusals)]
    accepted = _normalise(result.accepted, kind)
    if kind is not Kind.DECISION:
        return CheckedBatch(kind, [(accepted, None)], refusals)
    accepted = enrich(accepted) if enrich is not None else accepted
    if explain is None or accepted.empty:
        return CheckedBatch(kind, [(accepted, None)], refusals)
    parts = []  # an explanation batch belongs to one model version
    for _, part in accepted.groupby("model_version", sort=False):
        part = part.reset_index(drop=True)
        parts.append((part, explain(part)))
    return CheckedBatch(kind, parts, refusals)


def store_checked(engine: Engine, batch: CheckedBatch, *, now_ts: int, source: str, quarantine_source: str,
                  then: Callable[[Connection], None] | None = None) -> None:
    """Store the accepted rows and quarantine the refused ones in ONE transaction, with `then` (what
    completes the batch: an idempotency key, a file's progress) in it too: all of it, or nothing."""
    with repo.write_transaction(engine) as conn:
        for rows_, explanation in batch.parts:
            if batch.kind is Kind.DECISION:
                repo.insert_decisions(conn, rows_, received_ts=now_ts, source=source, explanation=explanation)
            elif batch.kind is Kind.OUTCOME:
                repo.insert_outcomes(conn, rows_, source=source)
            else:
                spec = SPECS[batch.kind]
                repo.insert_feed(conn, spec.table, spec.fields, rows_, received_ts=now_ts, source=source)
        repo.write_quarantine(conn, batch.kind.value, quarantine_source, batch.refusals, now_ts)
        if then is not None:
            then(conn)


def ingest_frame(engine: Engine, kind: Kind, frame: pd.DataFrame, *, now_ts: int, source: str,
                 quarantine_source: str, known_campaigns: Collection[str] | None,
                 known_packages: Collection[str] | None = None, limits: Limits = DEFAULT_LIMITS,
                 from_text: bool = False, positions: np.ndarray | None = None,
                 extra_refusals: Sequence[Refusal] = (), enrich: Enrich | None = None,
                 explain: ExplainRows | None = None,
                 then: Callable[[Connection], None] | None = None,
                 servable_versions: Collection[str] | None = None) -> tuple[int, list[Refusal]]:
    """check_frame, then store_checked: returns (accepted, refusals)."""
    batch = check_frame(kind, frame, now_ts=now_ts, known_campaigns=known_campaigns, known_packages=known_packages,
                        limits=limits, from_text=from_text, positions=positions, extra_refusals=extra_refusals,
                        enrich=enrich, explain=explain, servable_versions=servable_versions)
    store_checked(engine, batch, now_ts=now_ts, source=source, quarantine_source=quarantine_source, then=then)
    return batch.accepted, batch.refusals


@dataclass(frozen=True)
class Catalogue:
    """The campaigns and audience packages rows may name."""

    campaigns: frozenset[str]
    packages: frozenset[str]


def catalogue(engine: Engine) -> Catalogue:
    with engine.connect() as conn:
        return Catalogue(frozenset(conn.execute(select(s.campaigns.c.campaign_id)).scalars()),
                         frozenset(conn.execute(select(s.audience_packages.c.code)).scalars()))


# --- files -------------------------------------------------------------------------------------

ROWS_MIN, ROWS_MAX = 200, 500_000
# Pandas keeps a chunk several times over while it is typed, validated and written: the
# chunk's text may take about this share of the budget (measured in tests/test_api_ingest.py).
TEXT_SHARE = 1 / 12


@dataclass(frozen=True)
class Chunk:
    frame: pd.DataFrame
    positions: np.ndarray          # each row's position in the file, counting data rows from 0
    malformed: list[Refusal]       # lines that could not be read or parsed, positioned
    end: int                       # the file's rows read through this chunk (the next row's position)


def _malformed(position: int, text: str, reason: str) -> Refusal:
    return Refusal(position, "_line", text[:1000], reason, {"_line": text[:10_000]})


def _chunk_bytes(budget_bytes: int) -> int:
    return max(64 << 10, int(budget_bytes * TEXT_SHARE))


def _lines(f, max_line: int) -> Iterator[tuple[str, str]]:
    """Each non-blank line of a binary file: (its text, "") or, for a line that is not valid UTF-8 or is
    longer than `max_line` bytes (read past, never held whole), (its start, escaped; why it is refused)."""
    while line := f.readline(max_line + 1):
        if len(line) > max_line and not line.endswith(b"\n"):
            while (rest := f.readline(max_line + 1)) and not rest.endswith(b"\n"):
                pass
            yield (line[:1000].decode("utf-8", "backslashreplace"),
                   f"line longer than {max_line} bytes (the memory budget's share for one chunk)")
            continue
        line = line.rstrip(b"\r\n")
        if not line.strip():
            continue
        try:
            yield line.decode("utf-8"), ""
        except UnicodeDecodeError as exc:
            yield line[:10_000].decode("utf-8", "backslashreplace"), f"not valid UTF-8 (byte {exc.start} of the line)"


Parse = Callable[[list[str], np.ndarray], tuple[pd.DataFrame, np.ndarray, list[Refusal]]]


def _line_chunks(f, budget_bytes: int, parse: Parse) -> Iterator[Chunk]:
    """Chunks of about the budget's share of text: good lines parsed by `parse` (texts, positions) ->
    (frame, positions of its rows, malformed), unreadable lines quarantined, one line never stopping the file."""
    limit = _chunk_bytes(budget_bytes)
    texts, positions, malformed, size, position = [], [], [], 0, 0

    def flush() -> Chunk:
        frame, kept, bad = parse(texts, np.asarray(positions, dtype=np.int64))
        return Chunk(frame, kept, malformed + bad, position)

    for text, problem in _lines(f, limit):
        if problem:
            malformed.append(_malformed(position, text, problem))
        else:
            texts.append(text)
            positions.append(position)
            size += len(text)
        position += 1
        if size >= limit:
            yield flush()
            texts, positions, malformed, size = [], [], [], 0
    if texts or malformed:
        yield flush()


def _csv_header(f, path: Path) -> list[str]:
    import csv as std_csv

    first = f.readline(_chunk_bytes(0) * 16)
    try:
        header = first.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError:
        raise InvalidValue("header", first[:200].decode("utf-8", "backslashreplace"),
                           f"{path.name}: the header line is not valid UTF-8") from None
    columns = next(std_csv.reader([header]), [])
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        raise InvalidValue("header", ", ".join(twice), f"{path.name}: a column appears twice in the header; "
                           "which one holds the value cannot be told")
    return columns


def _csv_chunks(path: Path, budget_bytes: int, kind: Kind) -> Iterator[Chunk]:
    import io

    import pyarrow as pa
    from pyarrow import csv

    with open(path, "rb") as f:
        columns = _csv_header(f, path)

        def parse(texts: list[str], positions: np.ndarray) -> tuple[pd.DataFrame, np.ndarray, list[Refusal]]:
            bad: list[int] = []

            def on_invalid(row) -> str:
                bad.append(int(row.number) - 1)  # its line among `texts`
                return "skip"

            if not texts:
                return pd.DataFrame({c: pd.Series(dtype=object) for c in columns}), positions, []
            data = ("\n".join(texts) + "\n").encode("utf-8")
            table = csv.read_csv(
                io.BytesIO(data),
                read_options=csv.ReadOptions(column_names=columns, use_threads=False, block_size=len(data) + 1),
                parse_options=csv.ParseOptions(invalid_row_handler=on_invalid),
                convert_options=csv.ConvertOptions(column_types={c: pa.string() for c in columns},
                                                   strings_can_be_null=True))
            frame = table.to_pandas(types_mapper=None).astype(object).where(lambda f: f.notna(), None)
            kept = np.delete(positions, bad)
            return frame, kept, [_malformed(int(positions[i]), texts[i], "malformed CSV line (wrong number of "
                                            "fields)") for i in bad]

        yield from _line_chunks(f, budget_bytes, parse)


def _jsonl_chunks(path: Path, budget_bytes: int, kind: Kind) -> Iterator[Chunk]:
    def parse(texts: list[str], positions: np.ndarray) -> tuple[pd.DataFrame, np.ndarray, list[Refusal]]:
        records, kept, bad = [], [], []
        for text, position in zip(texts, positions.tolist(), strict=True):
            try:
                record = json.loads(text)
            except ValueError:
                record = None
            if isinstance(record, dict):
                records.append(record)
                kept.append(position)
            else:
                bad.append(_malformed(position, text, "malformed JSON line (not an object)"))
        return records_frame(records, kind), np.asarray(kept, dtype=np.int64), bad

    with open(path, "rb") as f:
        yield from _line_chunks(f, budget_bytes, parse)


def _parquet_chunks(path: Path, budget_bytes: int, kind: Kind) -> Iterator[Chunk]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    meta = parquet.metadata
    row_bytes = max(1.0, sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
                    / max(1, meta.num_rows))
    batch_rows = int(np.clip(budget_bytes * TEXT_SHARE / row_bytes, ROWS_MIN, ROWS_MAX))
    start = 0
    for batch in parquet.iter_batches(batch_size=batch_rows):
        frame = batch.to_pandas()
        yield Chunk(frame, np.arange(start, start + len(frame)), [], start + len(frame))
        start += len(frame)


READERS = {".csv": _csv_chunks, ".jsonl": _jsonl_chunks, ".ndjson": _jsonl_chunks,
           ".parquet": _parquet_chunks, ".pq": _parquet_chunks}


def fingerprint(path: Path) -> str:
    """The file's SHA-256: the same bytes are the same file, whatever its name."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _after(chunk: Chunk, done: int) -> Chunk:
    """The chunk without the rows an earlier run of the file already stored or quarantined."""
    keep = chunk.positions >= done
    frame = chunk.frame if keep.all() else chunk.frame[keep].reset_index(drop=True)
    return Chunk(frame, chunk.positions[keep], [r for r in chunk.malformed if r.row_index >= done], chunk.end)


def ingest_file(engine: Engine, kind: Kind, path: str | Path, *, now_ts: int, budget_bytes: int,
                known_campaigns: Collection[str] | None = None, limits: Limits = DEFAULT_LIMITS,
                progress: Callable[[IngestReport], None] | None = None,
                enrich: Enrich | None = None, explain: ExplainRows | None = None,
                servable_versions: Collection[str] | None = None) -> IngestReport:
    """Stream a CSV, JSON Lines or Parquet file into the store, chunk by chunk, each chunk all or nothing.

    The file's progress is stored with each chunk (by its SHA-256), so a second run of the same file
    stores nothing twice: it resumes after the last chunk an interrupted run stored, and does nothing
    for a file stored whole. Unreadable lines (bad UTF-8, too long, malformed) are quarantined with the
    rest of their chunk's refusals; a header naming a column twice refuses the file, nothing stored.
    `servable_versions`: check_frame's launch gate.
    """
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"file {path.name}: unknown format {path.suffix!r}; use one of {sorted(READERS)}")
    kind = Kind(kind)
    known = catalogue(engine)
    report = IngestReport(kind.value, f"file:{path.resolve()}"[:200], now_ts)
    print_ = fingerprint(path)
    with engine.begin() as conn:
        done, finished = repo.start_file(conn, print_, kind.value, report.source, now_ts)
    report.skipped = done
    if finished:
        return report
    for chunk in reader(path, budget_bytes, kind):
        if chunk.end <= done:
            continue
        chunk = _after(chunk, done)

        def then(conn: Connection, start: int = done, end: int = chunk.end) -> None:
            repo.advance_file(conn, print_, kind.value, start, end, now_ts)

        accepted, refusals = ingest_frame(
            engine, kind, chunk.frame, now_ts=now_ts, source="file", quarantine_source=report.source,
            known_campaigns=known.campaigns if known_campaigns is None else known_campaigns,
            known_packages=known.packages, limits=limits, from_text=reader is _csv_chunks,
            positions=chunk.positions, extra_refusals=chunk.malformed, enrich=enrich, explain=explain, then=then,
            servable_versions=servable_versions)
        done = chunk.end
        report.add(accepted, refusals)
        if progress is not None:
            progress(report)
    with engine.begin() as conn:
        repo.finish_file(conn, print_, kind.value, done, now_ts)
    return report
