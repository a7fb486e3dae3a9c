"""What every admin page shares: the site's titles, actions-only and big-table changelists, the bulk-action base."""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import FieldDoesNotExist, PermissionDenied
from django.db import connections
from django.db.models import QuerySet
from django.db.models.constants import LOOKUP_SEP
from django.forms import Form
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.html import format_html
from django.utils.translation import gettext

from approvals import services
from approvals.forms.admin import ConfirmForm
from approvals.paginators import LargeTablePaginator

logger = logging.getLogger(__name__)

# A bulk action over more rows than this is refused: narrow the list with a filter first.
MAX_BULK_ROWS = 500

admin.site.site_header = "Approval portal"
admin.site.site_title = "Approval portal admin"
admin.site.index_title = "Workbench"
# The index links the operations dashboard (approvals/views/ops.py) for those who may see it.
admin.site.index_template = "admin/approvals/index.html"


# ---------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------
class ActionsOnlyMixin:
    """Rows are never added, edited or deleted in a form: changes are actions that call services."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class BigTableChangeList(ChangeList):
    """Sorts only by the columns the admin offers (`sortable_by`, each with an index): Django's
    changelist obeys any `?o=<column>`, and a hand-made link sorting by another column (the
    status, say) sorted every row of the table (170 ms at 100,000 requests). Such a column is
    ignored, as Django ignores one that cannot be sorted at all."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Django adds the list's filters and search to every row's link (items_for_result calls
        # add_preserved_filters), and for that resolves the row's URL again, once per row: a
        # tenth of a search page's time with 50 rows. They are the same for every row, so they
        # are worked out once (url_for_result) and Django's per-row step finds nothing to add.
        self.row_filters, self.preserved_filters = self.preserved_filters, ""
        self.row_link_query: str | None = None

    def url_for_result(self, result):
        url = super().url_for_result(result)
        if self.row_link_query is None:
            context = {"preserved_filters": self.row_filters, "opts": self.opts}
            self.row_link_query = urlsplit(add_preserved_filters(context, url)).query
        return f"{url}?{self.row_link_query}" if self.row_link_query else url

    def get_ordering_field(self, field_name):
        if self.sortable_by is not None and field_name not in self.sortable_by:
            return None
        return super().get_ordering_field(field_name)


# The parts of a date a changelist may be filtered by in its URL (the drill-down's links), each
# within what Python's datetime holds with room for the drill-down's next year, month or day.
DATE_PART_RANGES = {"year": (1, 9998), "iso_year": (1, 9998), "month": (1, 12), "day": (1, 31)}


def reads_a_secret(model, lookup: str) -> bool:
    """Whether a changelist lookup (`field__startswith`, `request__field`, …) reads a field its
    model declares secret (`secret_fields`), on this model or one it reaches."""
    for part in lookup.split(LOOKUP_SEP):
        if part in getattr(model, "secret_fields", ()):
            return True
        try:
            model = model._meta.get_field(part).related_model
        except FieldDoesNotExist:
            return False  # a lookup (`startswith`), or no field: Django's own check decides
        if model is None:
            return False
    return False


class CraftedRequestsMixin:
    """What every admin of the portal answers to a hand-made URL or POST, where Django's admin
    raised (a 500) instead of refusing.

    - A bulk action's posted ids are filtered by as they come: one that is no id ("abc", a NUL
      character, a number no key can hold) raised ValueError. Such values are dropped first, as
      posted_ids drops them; with none left Django says that nothing was selected.
    - A date part in the URL (`received_at__year=9999`, `…__month=99999999999999999999`,
      `created_at__year=0`: Django's admin takes a lookup on any of the model's own fields)
      raised ValueError or OverflowError from datetime. One outside DATE_PART_RANGES, or no
      number at all, gets what Django gives a date it can tell is wrong (February 30th): its
      "invalid parameters" page (IncorrectLookupParameters, a redirect with `?e=1`).
    - A regular expression (`title__regex=(`): one PostgreSQL cannot compile raised DataError,
      and any of them reads every row. No page links to one: a lookup the admin does not allow
      (400).
    - A lookup on a secret (a model's `secret_fields`: a task token's ciphertext or fingerprint,
      a SCIM token's digest, a source's external ID, reached directly or through a relation): no
      page shows them, but `?token_ciphertext__startswith=gAAAA` answered with rows or none, an
      oracle that reads the value out one character at a time. Not allowed (400), as Django's
      UserAdmin refuses `password`.
    """

    def lookup_allowed(self, lookup, value, request=None):
        if lookup.endswith(("__regex", "__iregex")) or reads_a_secret(self.model, lookup):
            return False
        part = lookup.rpartition("__")[2]
        if part in DATE_PART_RANGES:
            low, high = DATE_PART_RANGES[part]
            try:
                number = int(value)
            except (TypeError, ValueError):
                number = None
            if number is None or not low <= number <= high:
                raise IncorrectLookupParameters(f"{lookup}: no such {part}")
        return super().lookup_allowed(lookup, value, request)

    def response_action(self, request, queryset):
        posted = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        ids = [str(pk) for pk in holdable_ids(posted_ids(request), queryset)]
        if ids != posted:
            data = request.POST.copy()
            data.setlist(helpers.ACTION_CHECKBOX_NAME, ids)
            request.POST = data
        return super().response_action(request, queryset)


class BigTableAdmin(CraftedRequestsMixin, admin.ModelAdmin):
    """Changelist settings that keep a list fast with hundreds of thousands of rows."""

    paginator = LargeTablePaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 50

    def action_checkbox(self, obj):
        """Django's row checkbox, the same HTML written directly: Django renders a form widget
        through the template engine for each row, a fifth of a list page's rows' time."""
        label = format_html(gettext("Select this object for an action - {}"), str(obj))
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
            helpers.ACTION_CHECKBOX_NAME,
            str(obj.pk),
            label,
        )

    def get_changelist(self, request, **kwargs):
        return BigTableChangeList

    def get_object(self, request, object_id, from_field=None):
        # A row outside what this user may see answers 404, like a row that does not exist
        # (Django's admin would redirect to the index instead).
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise Http404("Not found")
        return obj


def holdable_ids(ids: list[int], queryset: QuerySet) -> list[int]:
    """`ids` without those the table's key cannot hold: one outside names no row, and SQLite's
    driver (and Django's admin, filtering by it) would raise on it instead of matching none."""
    low, high = connections[queryset.db].ops.integer_field_range(queryset.model._meta.pk.get_internal_type())
    return [pk for pk in ids if low <= pk <= high]


def posted_ids(request: HttpRequest) -> list[int]:
    ids = []
    for value in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME):
        try:
            ids.append(int(value))
        except ValueError:
            continue
    return list(dict.fromkeys(ids))


def selected_ids(request: HttpRequest, queryset: QuerySet) -> list[int]:
    """The rows a bulk action was asked for, narrowed to the user's own list (`queryset`, the
    changelist's rows) before anything else: a posted id outside it is treated exactly like an
    id that does not exist (see unseen_ids), never handed to a service."""
    if request.POST.get("select_across") == "1":
        return list(queryset.values_list("pk", flat=True)[: MAX_BULK_ROWS + 1])
    posted = posted_ids(request)[: MAX_BULK_ROWS + 1]
    seen = set(queryset.filter(pk__in=holdable_ids(posted, queryset)).values_list("pk", flat=True))
    return [pk for pk in posted if pk in seen]


def unseen_ids(request: HttpRequest, selected: list[int]) -> list[int]:
    """Posted ids not in the user's list: rows that do not exist and rows they may not see, alike."""
    if request.POST.get("select_across") == "1":
        return []
    chosen = set(selected)
    return [pk for pk in posted_ids(request)[: MAX_BULK_ROWS + 1] if pk not in chosen]


NOT_YOURS = "There is no such row, or it is not yours to see."
# A row whose service raised what it does not refuse with (a bug, data no check foresaw): its
# transaction rolled back, the traceback is logged, and the other rows are still done (a 500
# partway left the admin not knowing which rows were).
UNEXPECTED = "an unexpected error (in the portal's log)."


class ServiceWrittenAdmin(CraftedRequestsMixin, admin.ModelAdmin):
    """An admin whose save and delete are one service call each: nothing here writes a model.

    Subclasses implement `service_save` (returns the saved row) and `service_delete`; a service's
    refusal after the form validated (a race at most) is the admin's 403 with the service's words.
    """

    def service_save(self, request: HttpRequest, pk: int | None, data: dict):
        raise NotImplementedError

    def service_delete(self, request: HttpRequest, pk: int) -> None:
        raise NotImplementedError

    def save_model(self, request, obj, form, change):
        try:
            saved = self.service_save(request, obj.pk if change else None, form.cleaned_data)
        except services.ApprovalError as error:
            raise PermissionDenied(error.message) from None
        obj.pk = saved.pk

    def delete_model(self, request, obj):
        self.service_delete(request, obj.pk)

    def delete_queryset(self, request, queryset):
        for pk in queryset.values_list("pk", flat=True):
            self.service_delete(request, pk)


@dataclass(frozen=True)
class BulkAction:
    """A bulk admin action, declared once: what its confirmation page says, the form it asks for,
    and the one service call per row, `run(request, row_id, cleaned_data)` (an ApprovalError refuses
    that row with its reason). The admin class labels the rows with `bulk_labels(request, ids)`."""

    name: str  # the admin action's method name: the confirmation page posts it back
    title: str
    verb: str  # past tense, for the result messages: "Cancelled 3: …"
    run: Callable[[HttpRequest, int, dict], object]
    form_class: type[Form] = ConfirmForm
    intro: str = ""


def run_bulk(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet, bulk: BulkAction
) -> HttpResponse | None:
    """An action through a confirmation page with one form, then one service call per row.

    The first POST (from the changelist) shows the page; its own POST (`confirm`) runs the rows
    and lists which were done and which were refused, with the reason.
    """
    ids = selected_ids(request, queryset)
    unseen = unseen_ids(request, ids)
    if len(ids) + len(unseen) > MAX_BULK_ROWS:
        modeladmin.message_user(
            request, f"Select at most {MAX_BULK_ROWS} rows for one action; filter the list first.", messages.ERROR
        )
        return None
    # Unseen rows are described like rows that do not exist: by their number only.
    labels = modeladmin.bulk_labels(request, ids + unseen)
    confirmed = "confirm" in request.POST
    form = bulk.form_class(request.POST if confirmed else None)
    if confirmed and form.is_valid():
        done, refused = [], [(pk, NOT_YOURS) for pk in unseen]
        for pk in ids:
            try:
                bulk.run(request, pk, form.cleaned_data)
            except services.ApprovalError as error:
                refused.append((pk, error.message))
            except services.DATABASE_GONE:
                raise  # every row would fail alike
            except Exception:  # noqa: BLE001 - logged with its traceback; the other rows are still done
                logger.exception("admin action %s failed on row %s; the other rows go on", bulk.name, pk)
                refused.append((pk, UNEXPECTED))
            else:
                done.append(pk)
        if done:
            names = ", ".join(labels[pk] for pk in done)
            modeladmin.message_user(request, f"{bulk.verb} {len(done)}: {names}.", messages.SUCCESS)
        for pk, reason in refused:
            modeladmin.message_user(request, f"Not {bulk.verb.lower()}: {labels[pk]} — {reason}", messages.ERROR)
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "opts": modeladmin.model._meta,
        "title": bulk.title,
        "intro": bulk.intro,
        "rows": [labels[pk] for pk in ids + unseen],
        "ids": ids + unseen,  # posted back as they came: the confirm POST narrows them again
        "action": bulk.name,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "form": form,
        "submit_label": bulk.title,
    }
    return TemplateResponse(request, "admin/approvals/action_form.html", context)
