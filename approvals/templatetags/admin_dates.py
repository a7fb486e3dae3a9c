"""`{% bounded_date_hierarchy cl %}`: the admin's date drill-down without reading every row.

Renders Django's own `admin/date_hierarchy.html` with the same links as Django's
`{% date_hierarchy cl %}`, but finds the years, months and days that have rows with one probe
per period (approvals/selectors/dates.py) instead of `SELECT DISTINCT` over the list. Used by
the approval requests' changelist (templates/admin/approvals/approvalrequest/change_list.html),
for a DateTimeField.
"""

import datetime

from django import template
from django.contrib.admin.templatetags.base import InclusionAdminNode
from django.utils import formats
from django.utils.text import capfirst
from django.utils.translation import gettext as _

from approvals.selectors.dates import date_range, dates_with_rows

register = template.Library()


def _number(value) -> int | None:
    try:
        return int(value) if value else None
    except (TypeError, ValueError):
        return None


def bounded_date_hierarchy(cl) -> dict:
    field_name = cl.date_hierarchy
    year_field, month_field, day_field = (f"{field_name}__{part}" for part in ("year", "month", "day"))
    year, month, day = (_number(cl.params.get(name)) for name in (year_field, month_field, day_field))

    def link(filters: dict) -> str:
        return cl.get_query_string(filters, [f"{field_name}__"])

    first = last = None
    if not year:
        first, last = date_range(cl.queryset, field_name)
    # Start where the rows are, as Django does: one year (month) only → its months (days).
    if not (year or month or day) and first and last and first.year == last.year:
        year = first.year
        if first.month == last.month:
            month = first.month

    if year and month and day:
        chosen = datetime.date(year, month, day)
        return {
            "show": True,
            "back": {
                "link": link({year_field: year, month_field: month}),
                "title": capfirst(formats.date_format(chosen, "YEAR_MONTH_FORMAT")),
            },
            "choices": [{"title": capfirst(formats.date_format(chosen, "MONTH_DAY_FORMAT"))}],
        }
    if year and month:
        days = dates_with_rows(cl.queryset, field_name, year=year, month=month)
        return {
            "show": True,
            "back": {"link": link({year_field: year}), "title": str(year)},
            "choices": [
                {
                    "link": link({year_field: year, month_field: month, day_field: found.day}),
                    "title": capfirst(formats.date_format(found, "MONTH_DAY_FORMAT")),
                }
                for found in days
            ],
        }
    if year:
        months = dates_with_rows(cl.queryset, field_name, year=year)
        return {
            "show": True,
            "back": {"link": link({}), "title": _("All dates")},
            "choices": [
                {
                    "link": link({year_field: year, month_field: found.month}),
                    "title": capfirst(formats.date_format(found, "YEAR_MONTH_FORMAT")),
                }
                for found in months
            ],
        }
    years = dates_with_rows(cl.queryset, field_name, first=first, last=last)
    return {
        "show": True,
        "back": None,
        "choices": [{"link": link({year_field: str(found.year)}), "title": str(found.year)} for found in years],
    }


@register.tag(name="bounded_date_hierarchy")
def bounded_date_hierarchy_tag(parser, token):
    return InclusionAdminNode(
        parser, token, func=bounded_date_hierarchy, template_name="date_hierarchy.html", takes_context=False
    )
