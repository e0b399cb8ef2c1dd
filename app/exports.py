"""Exports carry who took them out and when (the white-box leak risk: explanations and reports are strategy).

Every file BidLens hands out -- a CSV, a review, a stress report -- is made through
`app.service.Control.export`, which checks EXPORT, stamps the content with the
exporter's name and the time, and appends `export.<what>` to the audit trail with
what was exported. These are the stamps, one per format.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from dataclasses import dataclass

import pandas as pd

from control.clock import PROMOTION_TZ
from control.domain import User

WORDS = {"zh": "导出人：{name}（{user}）· 导出时间：{time}（UTC+8）· 仅供内部使用，含策略信息",
         "en": "Exported by {name} ({user}) at {time} (UTC+8) · internal use only: contains strategy"}


@dataclass(frozen=True)
class Stamp:
    username: str
    display_name: str
    ts: int

    @classmethod
    def of(cls, user: User, ts: int) -> Stamp:
        return cls(user.username, user.display_name, int(ts))

    @property
    def time(self) -> str:
        return dt.datetime.fromtimestamp(self.ts, PROMOTION_TZ).strftime("%Y-%m-%d %H:%M:%S")

    def line(self, lang: str = "zh") -> str:
        return WORDS[lang].format(name=self.display_name, user=self.username, time=self.time)

    def as_json(self) -> dict:
        return {"exported_by": self.username, "exported_by_name": self.display_name, "exported_ts": self.ts,
                "exported_at": f"{self.time} UTC+8"}


def stamped_csv(frame: pd.DataFrame, stamp: Stamp, lang: str = "zh") -> bytes:
    """The frame as CSV (UTF-8 with BOM, for Excel) under a `#` line naming the exporter and the time."""
    return (f"# {stamp.line(lang)}\n" + frame.to_csv(index=False)).encode("utf-8-sig")


def stamped_html(page: str, stamp: Stamp, lang: str = "zh") -> str:
    """The page with the stamp as a banner at the top of its body (and in a meta tag)."""
    banner = (f'<meta name="bidlens-export" content="{html.escape(json.dumps(stamp.as_json()))}">'
              f'<p style="background:#fff3cd;padding:6px;border:1px solid #e0c36a">{html.escape(stamp.line(lang))}</p>')
    return page.replace("<body>", "<body>\n" + banner, 1) if "<body>" in page else banner + page


def stamped_json(doc: dict, stamp: Stamp) -> bytes:
    return (json.dumps({"export": stamp.as_json(), **doc}, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
