"""The admin's date drill-down: which years, months or days of a list have rows, without reading them.

Django's `date_hierarchy` lists them with `SELECT DISTINCT date_trunc(…)` over the whole
(filtered) list: every row of the table for the years, every row of a year for its months.
Here each candidate period is one `EXISTS (… LIMIT 1)` probe, all in one query: with an index
on the column a probe stops at the first row it finds, so the cost follows the number of
periods (at most 31), not the number of rows (docs/benchmarks.md, "Flat pages").
"""

import calendar
import datetime

from django.conf import settings
from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import QuerySet
from django.utils import timezone

# Years listed at most, the newest ones: received_at is set by the portal, so a wider span is
# a data error, and one probe per year of it would be a long query.
MAX_YEARS = 50


def date_range(queryset: QuerySet, field: str) -> tuple[datetime.datetime | None, datetime.datetime | None]:
    """The first and last value of `field` in the list, in the current time zone, in one query.

    Two `ORDER BY field LIMIT 1` sub-selects rather than MIN/MAX: under a filter (a group, a
    failed callback, a search) PostgreSQL planned MIN/MAX as a join of every row's date with
    the matches (40-60 ms at 100,000 requests); a LIMIT 1 lets it walk the column's index from
    each end and stop at the first match.
    """
    connection = connections[queryset.db]
    present = queryset.order_by().filter(**{f"{field}__isnull": False}).values_list(field, flat=True)
    try:
        probes, params = _compiled(present.order_by(field)[:1], present.order_by(f"-{field}")[:1])
    except EmptyResultSet:
        return None, None
    probes = [f"({sql})" for sql in probes]
    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(probes), params)  # noqa: S608 - Django-compiled SQL, values are params
        values = cursor.fetchone()
    if values[0] is None or values[1] is None:
        return None, None
    # A raw cursor returns what the driver gives (SQLite: text): convert as the ORM would.
    column = queryset.model._meta.get_field(field).get_col(queryset.model._meta.db_table)
    converters = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
    first, last = values
    for converter in converters:
        first, last = converter(first, column, connection), converter(last, column, connection)
    if settings.USE_TZ:
        first, last = timezone.localtime(first), timezone.localtime(last)
    return first, last


def _compiled(*querysets: QuerySet) -> tuple[list[str], list]:
    """Each queryset's SQL, and all their parameters in order. Raises EmptyResultSet for a list
    Django knows to be empty without asking (SQLite's search by no ids: `pk IN ()`)."""
    probes, params = [], []
    for queryset in querysets:
        sql, probe_params = queryset.query.get_compiler(using=queryset.db).as_sql()
        probes.append(sql)
        params.extend(probe_params)
    return probes, params


def _aware(moment: datetime.datetime) -> datetime.datetime:
    # As the changelist's own year/month/day filter makes its bounds (ChangeList.get_filters):
    # local midnights, computed naive and then made aware in the current time zone.
    return timezone.make_aware(moment) if settings.USE_TZ else moment


def _periods(year: int | None, month: int | None, first, last) -> list[tuple[datetime.date, datetime.datetime]]:
    """The candidate periods of the next level down: (its first day, the day after it), in order."""
    if year is None:
        years = list(range(first.year, last.year + 1))[-MAX_YEARS:]
        return [(datetime.date(y, 1, 1), datetime.date(y + 1, 1, 1)) for y in years]
    if month is None:
        return [(datetime.date(year, m, 1), datetime.date(year + m // 12, m % 12 + 1, 1)) for m in range(1, 13)]
    days = calendar.monthrange(year, month)[1]
    return [
        (datetime.date(year, month, d), datetime.date(year, month, d) + datetime.timedelta(days=1))
        for d in range(1, days + 1)
    ]


def _midnight(day: datetime.date) -> datetime.datetime:
    return _aware(datetime.datetime(day.year, day.month, day.day))  # noqa: DTZ001 - made aware in _aware


def dates_with_rows(
    queryset: QuerySet,
    field: str,
    *,
    year: int | None = None,
    month: int | None = None,
    first: datetime.datetime | None = None,
    last: datetime.datetime | None = None,
) -> list[datetime.date]:
    """The years (no `year`; between `first` and `last`, see date_range), the months of `year`, or
    the days of `month` in `year` in which `queryset` has a row, in one query.

    Each period is `EXISTS (SELECT … WHERE <the list's filters> AND field >= start AND field <
    end LIMIT 1)`; the periods' bounds are the current time zone's, as the changelist filters by.
    """
    if year is None and (first is None or last is None):
        return []
    periods = _periods(year, month, first, last)
    if not periods:
        return []
    connection = connections[queryset.db]
    try:
        probes, params = _compiled(
            *(
                queryset.order_by()
                .filter(**{f"{field}__gte": _midnight(start), f"{field}__lt": _midnight(end)})
                .values("pk")[:1]
                for start, end in periods
            )
        )
    except EmptyResultSet:
        return []
    probes = [f"EXISTS ({sql})" for sql in probes]
    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(probes), params)  # noqa: S608 - Django-compiled SQL, values are params
        found = cursor.fetchone()
    return [day for (day, _), has_rows in zip(periods, found, strict=True) if has_rows]
