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
            estimate = self._estimated_rows(queryset)
            if estimate is not None and estimate >= self.estimate_from:
                self.is_estimate = True
                return estimate
        if self.count_limit is None:
            return queryset.count()
        count = queryset[: self.count_limit + 1].count()
        if count > self.count_limit:
            self.is_capped = True
            return self.count_limit
        return count

    @staticmethod
    def _estimated_rows(queryset: QuerySet) -> int | None:
        connection = connections[queryset.db]
        if connection.vendor != "postgresql":
            return None
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [queryset.model._meta.db_table]
            )
            row = cursor.fetchone()
        # -1: never vacuumed or analyzed yet; then count for real.
        return row[0] if row and row[0] >= 0 else None


class AuditTrailPaginator(LargeTablePaginator):
    """Millions of audit events: a filter that still matches most of them is counted to 10,000."""

    count_limit = 10_000
