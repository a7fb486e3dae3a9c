"""A paginator for the admin's big tables: no full COUNT(*) over hundreds of thousands of rows."""

from functools import cached_property

from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet


class LargeTablePaginator(Paginator):
    """Counts like Django's paginator, except where counting would read the whole table.

    - Unfiltered, on PostgreSQL, with a table of at least `estimate_from` rows: the planner's
      estimate (pg_class.reltuples, kept by autovacuum/ANALYZE) instead of COUNT(*).
    - Filtered: an exact count, but at most `count_limit` rows (None: no limit); pages past
      that are not offered, a filter or search narrows it down.

    `is_estimate` / `is_capped` tell the pagination template to say "about" / "more than".
    """

    estimate_from = 10_000
    count_limit: int | None = None

    is_estimate = False
    is_capped = False

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return super().count
        if not queryset.query.where:
            counted = self._estimate_or_count(queryset)
            if counted is not None:
                return counted
        if self.count_limit is None:
            return queryset.count()
        count = queryset[: self.count_limit + 1].count()
        if count > self.count_limit:
            self.is_capped = True
            return self.count_limit
        return count

    def _estimate_or_count(self, queryset: QuerySet) -> int | None:
        """One query: the planner's estimate for a big table, an exact COUNT(*) for a small one.

        The COUNT(*) sub-select runs only when the estimate is below `estimate_from` (or absent:
        -1 means never vacuumed or analyzed), so the number of queries never depends on the size.
        """
        connection = connections[queryset.db]
        if connection.vendor != "postgresql":
            return None
        table = queryset.model._meta.db_table
        quoted = connection.ops.quote_name(table)  # a model's own table name
        sql = (
            "SELECT CASE WHEN reltuples >= %s THEN reltuples::bigint"  # noqa: S608
            f" ELSE (SELECT COUNT(*) FROM {quoted}) END, reltuples >= %s"
            " FROM pg_class WHERE oid = %s::regclass"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [self.estimate_from, self.estimate_from, table])
            row = cursor.fetchone()
        if row is None:
            return None
        self.is_estimate = bool(row[1])
        return row[0]


class AuditTrailPaginator(LargeTablePaginator):
    """Millions of audit events: a filter that still matches most of them is counted to 10,000."""

    count_limit = 10_000
