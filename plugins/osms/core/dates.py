"""The calendar the pipeline runs on: Almaty's, the day D a run is for, and when its run starts.

Said once, here: every module that needs Almaty's time zone, the run's D or the
logical date of D's run imports it from this module.

- A run is for the day D that just ended in Almaty; its logical date is the start of
  its data interval, 00:30 Almaty on D (see :data:`SCHEDULE`).
- Scheduled and backfill runs have logical date = data interval start = D. A manual
  run keeps the logical date the operator chose, so "trigger for 2025-06-01" means
  D = 2025-06-01.
- Almaty was UTC+6 before 2024-03-01 and is UTC+5 since; dates are read in the zone,
  never as fixed offsets.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["ALMATY", "SCHEDULE", "START_DATE", "almaty", "logical_date", "run_day", "yesterday_in_almaty"]

ALMATY = "Asia/Almaty"
# Daily at 00:30 Almaty for the day that just ended: the data interval is that day,
# so a run's D is its interval start, and a backfill over a date range gives one
# run per D, exactly as the schedule would have.
SCHEDULE = "30 0 * * *"
RUN_TIME = dt.time(0, 30)
START_DATE = dt.date(2022, 9, 26)  # the 2022 edition's first day


def almaty() -> dt.tzinfo:
    """Almaty's time zone."""
    return ZoneInfo(ALMATY)


def run_day(context: Any) -> dt.date:
    """The date D a run is for, from its task context: its logical date, as the calendar reads in Almaty."""
    moment = context.get("logical_date") or context["data_interval_start"]
    if not isinstance(moment, dt.datetime):
        moment = dt.datetime.fromisoformat(str(moment))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(almaty()).date()


def logical_date(day: dt.date) -> str:
    """The logical date of D's run, ISO text: the start of its data interval (00:30 Almaty on D)."""
    return dt.datetime.combine(day, RUN_TIME, tzinfo=almaty()).isoformat()


def yesterday_in_almaty(now: dt.datetime | None = None) -> dt.date:
    """Yesterday, as the calendar reads in Almaty: the day a run started now would be for."""
    moment = now or dt.datetime.now(dt.timezone.utc)
    return moment.astimezone(almaty()).date() - dt.timedelta(days=1)
