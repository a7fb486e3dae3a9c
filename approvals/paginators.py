"""Paginators for big tables: the admin's (no full COUNT(*) over hundreds of thousands of rows)
and the inbox's (pages found by seeking from a row, not by OFFSET)."""

import operator
from dataclasses import dataclass
from functools import cached_property, reduce

from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import F, OrderBy, Q, QuerySet


class LargeTablePaginator(Paginator):
    """Counts like Django's paginator, except where counting would read the whole table.

    - Unfiltered, on PostgreSQL, with a table of at least `estimate_from` rows: the planner's
      estimate (pg_class.reltuples, kept by autovacuum/ANALYZE) instead of COUNT(*).
    - Filtered: an exact count, but at most `count_limit` rows (None: no limit); pages past
      that are not offered, a filter or search narrows it down. A filter that matches a
      twentieth of 100,000 requests took 16-19 ms to count exactly, and more as the table grows;
      counting up to 1,000 (`SELECT COUNT(*) FROM (… LIMIT 1001)`) costs the same at any size.

    `is_estimate` / `is_capped` tell the pagination template to say "about" / "more than".
    """

    estimate_from = 10_000
    count_limit: int | None = 1_000
    # From this many rows deep, a page is found in two steps: the ids of its rows by OFFSET,
    # which reads only the ordering's index (an index-only scan), then the rows themselves by id.
    # In one step PostgreSQL fetched every skipped row from the table: the last of 2,000 pages
    # at 100,000 requests took 76 ms, its ids alone 16 ms. One more query, on deep pages only.
    deferred_from = 500

    is_estimate = False
    is_capped = False

    def _get_page(self, object_list, number, paginator):
        # Django's page() hands its slice here; a deep one becomes its ids, then its rows by id
        # in the same ordering (so in the page's order).
        if isinstance(object_list, QuerySet) and object_list.query.low_mark >= self.deferred_from:
            ids = list(object_list.values_list("pk", flat=True))
            object_list = self.object_list.filter(pk__in=ids)
        return super()._get_page(object_list, number, paginator)

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
        # In no order: PostgreSQL may stop at the limit whichever way it finds the rows.
        count = queryset.order_by()[: self.count_limit + 1].count()
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


# ---------------------------------------------------------------------------
# The inbox: pages found by seeking from a row ("keyset pagination"), not by OFFSET
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _SortKey:
    """One column of an ordering: its field, direction and, for a nullable field, where NULLs go."""

    name: str
    descending: bool
    nulls: str | None  # "first" / "last"; None: the column is NOT NULL

    def order_by(self):
        if self.nulls is None:
            return f"-{self.name}" if self.descending else self.name
        order = F(self.name).desc if self.descending else F(self.name).asc
        return order(nulls_first=True) if self.nulls == "first" else order(nulls_last=True)

    def reversed(self) -> "_SortKey":
        flipped = {"first": "last", "last": "first"}.get(self.nulls)
        return _SortKey(self.name, not self.descending, flipped)

    def equal(self, value) -> Q:
        return Q(**{f"{self.name}__isnull": True}) if value is None else Q(**{self.name: value})

    def beyond(self, value) -> Q | None:
        """The rows that come strictly after `value` in this column's order (None: none do)."""
        if value is None:
            return Q(**{f"{self.name}__isnull": False}) if self.nulls == "first" else None
        beyond = Q(**{f"{self.name}__{'lt' if self.descending else 'gt'}": value})
        return beyond | Q(**{f"{self.name}__isnull": True}) if self.nulls == "last" else beyond


def _sort_keys(queryset: QuerySet) -> list[_SortKey]:
    """The queryset's ordering as sort keys, the primary key last so that it is a total order.

    The model's own columns ("-received_at", F("deadline").asc(nulls_last=True), …) or the
    queryset's annotations of a joined column ("-voted_at", the "decided" tab's vote time). A
    nullable column without an explicit NULLS placement gets PostgreSQL's (NULL sorts above
    every value), made explicit so that SQLite orders the same way.
    """
    opts = queryset.model._meta
    keys = []
    for item in queryset.query.order_by or opts.ordering:
        if isinstance(item, str) and item != "?":
            descending, name, nulls = item.startswith("-"), item.lstrip("-"), None
        elif isinstance(item, OrderBy) and isinstance(item.expression, F):
            descending, name = item.descending, item.expression.name
            nulls = "first" if item.nulls_first else "last" if item.nulls_last else None
        else:
            raise ValueError(f"cannot seek in an ordering by {item!r}")
        if name in queryset.query.annotations:
            field = queryset.query.annotations[name].output_field
        else:
            field = opts.pk if name == "pk" else opts.get_field(name)
            name = field.name
        if field.null and nulls is None:
            nulls = "first" if descending else "last"
        keys.append(_SortKey(name, descending, nulls if field.null else None))
    if not keys or keys[-1].name != opts.pk.name:
        keys.append(_SortKey(opts.pk.name, keys[-1].descending if keys else False, None))
    return keys


def _after(keys: list[_SortKey], values) -> Q:
    """Rows after the one whose sort values are `values`: (k1 beyond) OR (k1 = and k2 beyond) OR …

    Plus the first column's bound on its own (k1 <= v1 when descending), which says the same
    but lets PostgreSQL start the index scan at the anchor instead of filtering from the top.
    """
    branches, equal = [], Q()
    for key, value in zip(keys, values, strict=True):
        beyond = key.beyond(value)
        if beyond is not None:
            branches.append(equal & beyond)
        equal &= key.equal(value)
    if not branches:
        return Q(pk__in=[])
    condition = reduce(operator.or_, branches)
    first, value = keys[0], values[0]
    if first.nulls is None:
        condition &= Q(**{f"{first.name}__{'lte' if first.descending else 'gte'}": value})
    return condition


@dataclass
class SeekPage:
    """One page of the inbox and what its links need.

    `number` is the page's number as the links counted it: a label (rows that arrive or leave
    shift it, the rows shown never skip or repeat one). `count` / `num_pages` are None when
    unknown; `is_capped`: there are more than `count`. The links: Next is `after=next_cursor`,
    Previous is `before=previous_cursor`, or the first page when `previous_cursor` is None.
    """

    object_list: list
    number: int
    count: int
    is_capped: bool
    num_pages: int | None
    has_next: bool
    has_previous: bool
    next_cursor: str | None
    previous_cursor: str | None

    @property
    def next_page_number(self) -> int:
        return self.number + 1

    @property
    def previous_page_number(self) -> int | None:
        """None for the first page, which its link leaves out."""
        return self.number - 1 if self.number > 2 else None


def seek_page(
    queryset: QuerySet,
    *,
    per_page: int,
    after: str = "",
    before: str = "",
    page: str = "",
    count: int | None = None,
    capped: bool = False,
    count_limit: int | None = None,
    anchor_field: str = "public_id",
) -> SeekPage:
    """The page after (or before) the row whose `anchor_field` is `after` (`before`).

    The page after row X is `WHERE (sort key) beyond X's … LIMIT per_page + 1`: with an index on
    the ordering that reads about one page whatever the depth, where OFFSET reads and drops
    every row before it. One query finds X's sort values (by `anchor_field`, a unique column
    that tells nothing about the database, unlike an id), one the page. X is looked up in the
    whole table, so a row that has left the list since (decided, say) still marks the place
    (in the list, when the order is by an annotation of the list's).
    An unknown anchor, or one with nothing beyond it any more, shows the first page.

    `page`: the number the link gave the page, a label only. Without an anchor the page is the
    first, whatever the number says: the portal's links always carry one, and serving a bare
    page number would mean OFFSET, which reads every row before the page (O(depth), see
    docs/benchmarks.md).

    `count`: the number of rows when the caller knows it (`capped`: at least that many); else
    counted here, exactly, or with
    `count_limit` up to that many: the ids of at most `count_limit` + 1 rows, in no order, so
    that PostgreSQL may stop as soon as it has them when many match, or find few by an index
    (in the list's order it would walk the ordering's index to its end when few match). If no
    more match, every page is then looked up among those ids.
    """
    keys = _sort_keys(queryset)
    queryset = queryset.order_by(*(key.order_by() for key in keys))
    is_capped = capped and count is not None  # the caller counted up to `count`, and there are more
    if count is None and count_limit is not None:
        ids = list(queryset.order_by().values_list("pk", flat=True)[: count_limit + 1])
        count, is_capped = min(len(ids), count_limit), len(ids) > count_limit
        if not is_capped:
            queryset = queryset.filter(pk__in=ids)
    elif count is None:
        count = queryset.count()
    num_pages = None if is_capped else max(1, -(-count // per_page))
    try:
        number = min(max(1, int(page)), num_pages or 1_000_000)
    except (TypeError, ValueError):
        number = 1

    # The anchor's sort values: from the whole table, or from the list when it sorts by one of
    # its annotations (which the table has not).
    annotated = any(key.name in queryset.query.annotations for key in keys)
    anchors = queryset if annotated else queryset.model._default_manager.all()

    def beyond_anchor(anchor: str, sort_keys: list[_SortKey]) -> list:
        try:
            values = anchors.filter(**{anchor_field: anchor}).values_list(*(key.name for key in keys)).first()
        except (ValidationError, ValueError):  # not a valid anchor: a hand-made link
            return []
        if values is None:
            return []
        ordered = queryset.order_by(*(key.order_by() for key in sort_keys))
        return list(ordered.filter(_after(sort_keys, values))[: per_page + 1])

    rows = None
    if not count:
        pass
    elif after:
        found = beyond_anchor(after, keys)
        if found:
            rows, has_next, has_previous = found[:per_page], len(found) > per_page, True
    elif before:
        found = beyond_anchor(before, [key.reversed() for key in keys])
        if len(found) > per_page:  # else the rows before the anchor are the first page's
            rows, has_next, has_previous = found[:per_page][::-1], True, True
    if rows is None:  # the first page
        found = list(queryset[: per_page + 1]) if count else []
        rows, has_next, has_previous = found[:per_page], len(found) > per_page, False

    # Keep the label coherent with what is shown: 1 without a previous page; at least 2 with one;
    # the last page's number when there is no next one.
    number = max(number, 2) if has_previous else 1
    if num_pages is not None and not has_next:
        num_pages = number = max(num_pages, 2) if has_previous else 1
    elif num_pages is not None:
        number = max(2, min(number, num_pages - 1)) if has_previous else 1
        num_pages = max(num_pages, number + 1)
    return SeekPage(
        object_list=rows,
        number=number,
        count=count,
        is_capped=is_capped,
        num_pages=num_pages,
        has_next=has_next,
        has_previous=has_previous,
        next_cursor=str(getattr(rows[-1], anchor_field)) if has_next else None,
        previous_cursor=str(getattr(rows[0], anchor_field)) if has_previous and number > 2 else None,
    )
