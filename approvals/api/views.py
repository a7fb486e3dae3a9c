"""/api/v1/: parse input, call one selector or service, answer. No business rules here."""

import csv
import hashlib
import json
from uuid import UUID

from django.conf import settings
from django.http import JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from approvals import one_click, permissions, selectors, services
from approvals.answers import NON_FIELD_ERRORS
from approvals.api import serializers as s
from approvals.api.authentication import service_account_of, stale_sso_refusal
from approvals.api.problems import (
    PROBLEM_CONTENT_TYPE,
    Problem,
    ProblemSerializer,
    problem_body,
    refusal_problem,
)
from approvals.api.throttles import CallerRateThrottle
from approvals.paginators import seek_page
from approvals.selectors import audit as audit_selectors
from approvals.selectors import delegations as delegation_selectors
from approvals.selectors import ingest as ingest_selectors
from approvals.services.idempotency import IdempotencyConflict, idempotent_call, request_fingerprint

INBOX_PAGE_SIZE = 25
INBOX_SEARCH_COUNT_LIMIT = 50
ADMIN_PAGE_SIZE = 100
NOT_FOUND = "There is no such approval request, or it is not yours to see."


def problems(*statuses: int) -> dict:
    """The problem responses an operation documents (400, 401 and 429 for every one)."""
    return {(status, PROBLEM_CONTENT_TYPE): ProblemSerializer for status in sorted({400, 401, 429, *statuses})}


def _plain(data):
    """A serializer's output as plain JSON values (what an idempotency record stores)."""
    return json.loads(json.dumps(data, cls=JSONEncoder))


def validated(serializer_class, data):
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def with_etag(request, data, *, status: int = 200) -> Response:
    """A read's answer with a strong ETag of its body; If-None-Match with it → 304."""
    body = json.dumps(data, cls=JSONEncoder, sort_keys=True, separators=(",", ":")).encode()
    tag = f'"{hashlib.sha256(body).hexdigest()[:40]}"'
    wanted = {part.strip().removeprefix("W/") for part in request.headers.get("If-None-Match", "").split(",")}
    headers = {"ETag": tag, "Cache-Control": "private, no-cache"}
    if tag in wanted or "*" in wanted:
        return Response(status=304, headers=headers)
    return Response(data, status=status, headers=headers)


def answer(status: int, body: dict) -> Response:
    return Response(body, status=status, content_type=PROBLEM_CONTENT_TYPE if status >= 400 else None)


@csrf_exempt  # changes nothing; a POST to a wrong URL hears "not found", not the CSRF page
def no_such_resource(request, *args, **kwargs) -> JsonResponse:
    return JsonResponse(
        problem_body("not_found", "There is no such resource in this API.", 404),
        status=404,
        content_type=PROBLEM_CONTENT_TYPE,
    )


class HasPermission(BasePermission):
    """An admin permission of the portal (the same ones the Django admin checks)."""

    def __init__(self, codename: str):
        self.codename = codename

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.has_perm(self.codename))


class ApiView(APIView):
    permission_classes = [IsAuthenticated]
    throttle_classes = [CallerRateThrottle]
    admin_permission = ""

    def get_permissions(self):
        found = super().get_permissions()
        return [*found, HasPermission(self.admin_permission)] if self.admin_permission else found

    def visible_request(self, public_id, *, attempted: str = ""):
        """The request if the caller may see it; else a 404 like a request that does not exist
        (audited for a write, as the pages do)."""
        approval = selectors.request_detail(public_id)
        account = service_account_of(self.request)
        user = self.request.user
        if approval is not None:
            if account is not None:
                visible = account.covers(approval.state_machine_arn)
            else:
                visible = permissions.can_view(user, approval)
            if visible:
                return approval
        if attempted:
            services.refusal_record(
                user=user, request=None, code="not_found", attempted=attempted, public_id=str(public_id), via="api"
            )
        raise refusal_problem("not_found", NOT_FOUND)

    def request_data(self, approval):
        return _plain(s.RequestSerializer(approval, context={"request": self.request}).data)

    def fresh_request(self, public_id):
        return self.request_data(selectors.request_detail(public_id))


# ---------------------------------------------------------------------------
# The caller's inbox and requests
# ---------------------------------------------------------------------------
def _cursor(value: str) -> tuple[str, str]:
    """An opaque cursor: "a.<uuid>" (the page after that row) or "b.<uuid>" (before it)."""
    direction, _, anchor = value.partition(".")
    try:
        UUID(anchor)
    except ValueError:
        return "", ""
    return (anchor, "") if direction == "a" else ("", anchor) if direction == "b" else ("", "")


class InboxView(ApiView):
    @extend_schema(
        operation_id="inbox",
        parameters=[s.InboxQuerySerializer],
        responses={200: s.InboxPageSerializer, **problems(400)},
        summary="The caller's inbox: the pages' tabs, search, filters, cursor pagination",
    )
    def get(self, request):
        query = validated(s.InboxQuerySerializer, request.query_params)
        user, tab = request.user, query["tab"]
        groups = permissions.user_group_names(user)
        delegated = selectors.delegated_identities(user)
        requests = selectors.inbox_tab(user, tab, groups=groups, delegated=delegated)
        account = service_account_of(request)
        if account is not None and "*" not in account.state_machines:
            requests = requests.filter(state_machine_arn__in=account.state_machines)
        listed = selectors.inbox_filter(
            requests,
            search=query["q"],
            state_machine=query["state_machine"],
            due=query.get("due", ""),
            sort=query.get("sort", ""),
        )
        after, before = _cursor(query["cursor"])
        page = seek_page(
            listed, per_page=INBOX_PAGE_SIZE, after=after, before=before, count_limit=INBOX_SEARCH_COUNT_LIMIT
        )
        url = request.build_absolute_uri()
        data = {
            "results": _plain(
                s.RequestSummarySerializer(page.object_list, many=True, context={"request": request}).data
            ),
            "next": replace_query_param(url, "cursor", f"a.{page.next_cursor}") if page.has_next else None,
            "previous": (
                replace_query_param(url, "cursor", f"b.{page.previous_cursor}")
                if page.previous_cursor
                else (replace_query_param(url, "cursor", "") if page.has_previous else None)
            ),
        }
        return with_etag(request, data)


class RequestView(ApiView):
    @extend_schema(
        operation_id="request",
        responses={200: s.RequestSerializer, **problems(404)},
        summary="A request: details, policy, votes, conversation, callback status",
    )
    def get(self, request, public_id):
        return with_etag(request, self.request_data(self.visible_request(public_id)))


class DecisionView(ApiView):
    @extend_schema(
        operation_id="decide",
        request=s.DecisionInputSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="A retried POST with the same key and body gets the first answer; never a second vote.",
            )
        ],
        responses={201: s.DecisionResultSerializer, **problems(400, 403, 404, 409, 422)},
        summary="Approve or reject, or choose the request's option(s) and answer its form "
        "(a rejection or a failure option needs a comment)",
    )
    def post(self, request, public_id):
        data = validated(s.DecisionInputSerializer, request.data)
        key = request.headers.get("Idempotency-Key")
        approve = data["decision"] == "approve" if "decision" in data else None
        choice = data.get("choice")

        def decide() -> tuple[int, dict]:
            try:
                if (stale := stale_sso_refusal(request)) is not None:
                    # Checked here, not before the Idempotency-Key: a retry still gets the first answer.
                    services.refusal_record(
                        user=request.user,
                        request=None,
                        code=stale.code,
                        attempted=data.get("decision") or "choice",
                        via="api",
                        public_id=str(public_id),
                    )
                    raise services.ApprovalError(stale.message, stale.code)
                approval = self.visible_request(public_id, attempted=data.get("decision") or "choice")
                if choice is not None and approve is not None:
                    _check_decision_matches_choice(approval, user=request.user, approve=approve, choice=choice)
                decision = {"approve": approve} if choice is None else {"choice": choice}
                if "answers" in data:
                    decision["answers"] = data["answers"]
                services.approval_decide(
                    public_id=public_id, user=request.user, comment=data["comment"], via="api", **decision
                )
            except services.ApprovalError as error:
                problem = refusal_problem(error.code, error.message)
                extra = _answer_errors(error)
                return problem.status_code, problem_body(
                    problem.problem_code, error.message, problem.status_code, **extra
                )
            except Problem as problem:
                return problem.status_code, problem_body(
                    problem.problem_code, str(problem.detail), problem.status_code, **problem.extra
                )
            approval = selectors.request_detail(public_id)
            vote = next((vote for vote in approval.votes.all() if vote.user_id == request.user.pk), None)
            return 201, {
                "request": self.request_data(approval),
                "vote": _plain(s.VoteSerializer(vote).data) if vote is not None else None,
            }

        if key is None:
            return answer(*decide())
        if not key or len(key) > 200 or not key.isascii() or not key.isprintable():
            raise Problem("validation_error", "Idempotency-Key: 1 to 200 printable ASCII characters.", 400)
        fingerprint = request_fingerprint(method=request.method, path=request.path, body=request.data)
        try:
            status, body, replayed = idempotent_call(user=request.user, key=key, fingerprint=fingerprint, call=decide)
        except IdempotencyConflict:
            raise Problem(
                "idempotency_conflict", "This Idempotency-Key was already used for a different request.", 422
            ) from None
        response = answer(status, body)
        if replayed:
            response["Idempotency-Replayed"] = "true"
        return response


def _check_decision_matches_choice(approval, *, user, approve: bool, choice: list[str]) -> None:
    """`decision` beside `choice`: each chosen option's outcome must say the same (an unknown id
    is the service's to refuse)."""
    outcome, verb = ("success", "approve") if approve else ("failure", "reject")
    for option_id in choice:
        option = one_click.option(approval, option_id)
        if option is not None and option.outcome != outcome:
            services.refusal_record(user=user, request=approval, code="choice_invalid", attempted=verb, via="api")
            raise Problem(
                "choice_invalid",
                f"The option “{option.label}” is a {option.outcome} option; `decision` says {verb}.",
                422,
                errors={"choice": ["The option's outcome and `decision` disagree."]},
            )


def _answer_errors(error) -> dict:
    """A refusal's per-field errors as the problem's `errors` member ("answers.<field>": [...])."""
    fields = getattr(error, "field_errors", None)
    if not fields:
        return {}
    return {
        "errors": {
            ("answers" if name == NON_FIELD_ERRORS else f"answers.{name}"): [str(message)]
            for name, message in fields.items()
        }
    }


def _service_write(view: ApiView, public_id, attempted: str, call) -> Response:
    """A write on one request: visible or 404, then one service call; a refusal → its problem."""
    view.visible_request(public_id, attempted=attempted)
    try:
        call()
    except services.ApprovalError as error:
        raise refusal_problem(error.code, error.message) from None
    return Response(view.fresh_request(public_id))


class ClaimView(ApiView):
    @extend_schema(operation_id="claim", request=None, responses={200: s.RequestSerializer, **problems(403, 404, 409)})
    def post(self, request, public_id):
        return _service_write(
            self, public_id, "claim", lambda: services.approval_claim(public_id=public_id, user=request.user)
        )

    @extend_schema(
        operation_id="unclaim", request=None, responses={200: s.RequestSerializer, **problems(403, 404, 409)}
    )
    def delete(self, request, public_id):
        return _service_write(
            self, public_id, "unclaim", lambda: services.approval_unclaim(public_id=public_id, user=request.user)
        )


class QuestionView(ApiView):
    @extend_schema(
        operation_id="ask",
        request=s.MessageInputSerializer,
        responses={200: s.RequestSerializer, **problems(400, 403, 404, 409)},
        summary="Ask the requester for more information",
    )
    def post(self, request, public_id):
        text = validated(s.MessageInputSerializer, request.data)["text"]
        return _service_write(
            self, public_id, "ask", lambda: services.info_request(public_id=public_id, user=request.user, question=text)
        )


class AnswerView(ApiView):
    @extend_schema(
        operation_id="answer",
        request=s.MessageInputSerializer,
        responses={200: s.RequestSerializer, **problems(400, 403, 404, 409)},
        summary="Answer the approvers' question (the requester)",
    )
    def post(self, request, public_id):
        text = validated(s.MessageInputSerializer, request.data)["text"]
        return _service_write(
            self, public_id, "answer", lambda: services.info_answer(public_id=public_id, user=request.user, answer=text)
        )


# ---------------------------------------------------------------------------
# Delegations (the caller's own)
# ---------------------------------------------------------------------------
class DelegationsView(ApiView):
    @extend_schema(operation_id="delegations", responses={200: s.DelegationsSerializer, **problems()})
    def get(self, request):
        return with_etag(
            request, _plain(s.DelegationsSerializer(delegation_selectors.delegations_of(request.user)).data)
        )

    @extend_schema(
        operation_id="delegate",
        request=s.DelegationInputSerializer,
        responses={201: s.DelegationSerializer, **problems(400, 403)},
    )
    def post(self, request):
        data = validated(s.DelegationInputSerializer, request.data)
        try:
            delegation = services.delegation_set(delegator=request.user, actor=request.user, **data)
        except services.ApprovalError as error:
            raise refusal_problem(error.code, error.message) from None
        return Response(s.DelegationSerializer(delegation).data, status=201)


class DelegationView(ApiView):
    @extend_schema(operation_id="revoke_delegation", responses={200: s.DelegationSerializer, **problems(403, 404)})
    def delete(self, request, delegation_id: int):
        try:
            delegation = services.delegation_revoke(delegation_id=delegation_id, actor=request.user)
        except services.ApprovalError as error:
            raise refusal_problem(error.code, error.message) from None
        return Response(s.DelegationSerializer(delegation).data)


# ---------------------------------------------------------------------------
# Admin
# ---------------------------------------------------------------------------
def _admin_request(public_id):
    approval = selectors.request_detail(public_id)
    if approval is None:
        raise refusal_problem("not_found", NOT_FOUND)
    return approval


def _admin_write(view: ApiView, public_id, call) -> Response:
    approval = _admin_request(public_id)
    try:
        call(approval)
    except services.ApprovalError as error:
        raise refusal_problem(error.code, error.message) from None
    return Response(view.fresh_request(public_id))


class ReassignView(ApiView):
    admin_permission = "approvals.reassign_approvalrequest"

    @extend_schema(
        operation_id="reassign",
        request=s.ReassignInputSerializer,
        responses={200: s.RequestSerializer, **problems(400, 403, 404, 409)},
    )
    def post(self, request, public_id):
        data = validated(s.ReassignInputSerializer, request.data)
        return _admin_write(
            self,
            public_id,
            lambda approval: services.approval_reassign(request_id=approval.pk, actor=request.user, **data),
        )


class CancelView(ApiView):
    admin_permission = "approvals.cancel_approvalrequest"

    @extend_schema(
        operation_id="cancel",
        request=s.ReasonInputSerializer,
        responses={200: s.RequestSerializer, **problems(400, 403, 404, 409)},
    )
    def post(self, request, public_id):
        reason = validated(s.ReasonInputSerializer, request.data)["reason"]
        return _admin_write(
            self,
            public_id,
            lambda approval: services.approval_cancel(request_id=approval.pk, actor=request.user, reason=reason),
        )


class CallbackRetryView(ApiView):
    admin_permission = "approvals.retry_callback"

    @extend_schema(
        operation_id="retry_callback", request=None, responses={200: s.CallbackSerializer, **problems(403, 404, 409)}
    )
    def post(self, request, callback_id: int):
        try:
            callback = services.callback_retry(callback_id=callback_id, actor=request.user)
        except services.ApprovalError as error:
            raise refusal_problem(error.code, error.message) from None
        return Response(s.CallbackSerializer(callback).data)


def _id_cursor(value: str) -> int | None:
    return int(value) if value.isascii() and value.isdigit() and len(value) < 19 else None


class IngestErrorsView(ApiView):
    admin_permission = "approvals.view_ingesterror"

    @extend_schema(
        operation_id="ingest_errors",
        parameters=[s.IngestErrorQuerySerializer],
        responses={200: s.IngestErrorPageSerializer, **problems(400, 403)},
    )
    def get(self, request):
        query = validated(s.IngestErrorQuerySerializer, request.query_params)
        rows = ingest_selectors.ingest_errors(status=query["status"], before_id=_id_cursor(query["cursor"]))
        page = list(rows[: ADMIN_PAGE_SIZE + 1])
        url = request.build_absolute_uri()
        data = {
            "results": _plain(s.IngestErrorSerializer(page[:ADMIN_PAGE_SIZE], many=True).data),
            "next": replace_query_param(url, "cursor", page[ADMIN_PAGE_SIZE - 1].pk)
            if len(page) > ADMIN_PAGE_SIZE
            else None,
        }
        return with_etag(request, data)


class IngestErrorActionView(ApiView):
    admin_permission = "approvals.resolve_ingesterror"
    action = ""

    @extend_schema(request=None, responses={200: s.IngestErrorSerializer, **problems(403, 404, 409)})
    def post(self, request, ingest_error_id: int):
        run = services.ingest_error_replay if self.action == "replay" else services.ingest_error_discard
        try:
            row = run(ingest_error_id=ingest_error_id, actor=request.user)
        except services.ApprovalError as error:
            raise refusal_problem(error.code, error.message) from None
        return Response(s.IngestErrorSerializer(row).data)


class AuditEventsView(ApiView):
    admin_permission = "approvals.view_auditevent"

    @extend_schema(
        operation_id="audit_events",
        parameters=[s.AuditQuerySerializer],
        responses={
            200: s.AuditPageSerializer,
            (200, "text/csv"): OpenApiTypes.STR,
            (200, "application/jsonl"): OpenApiTypes.STR,
            **problems(400, 403),
        },
        summary="The audit trail, filtered, paginated; format=csv or jsonl exports it",
    )
    def get(self, request):
        query = validated(s.AuditQuerySerializer, request.query_params)
        events = audit_selectors.audit_events(
            action=query["action"],
            request_public_id=query["request"],
            actor=query["actor"],
            since=query["since"],
            until=query["until"],
            before_id=_id_cursor(query["cursor"]),
        )
        if query.get("format") in {"csv", "jsonl"}:
            return _export(events[: settings.API_AUDIT_EXPORT_LIMIT], query["format"])
        page = list(events[: ADMIN_PAGE_SIZE + 1])
        url = request.build_absolute_uri()
        data = {
            "results": _plain(s.AuditEventSerializer(page[:ADMIN_PAGE_SIZE], many=True).data),
            "next": replace_query_param(url, "cursor", page[ADMIN_PAGE_SIZE - 1].pk)
            if len(page) > ADMIN_PAGE_SIZE
            else None,
        }
        return with_etag(request, data)


class _Echo:
    def write(self, value):
        return value


def _export(events, kind: str) -> StreamingHttpResponse:
    rows = (_plain(s.AuditEventSerializer(event).data) for event in events.iterator(chunk_size=500))
    if kind == "jsonl":
        lines = (json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        response = StreamingHttpResponse(lines, content_type="application/jsonl")
    else:
        writer = csv.writer(_Echo())
        header = ["id", "at", "action", "actor", "request", "data"]

        def csv_lines():
            yield writer.writerow(header)
            for row in rows:
                row["data"] = json.dumps(row["data"], ensure_ascii=False)
                # A cell starting with = + - @ is a formula to a spreadsheet: quoted as text.
                yield writer.writerow([_csv_safe(str(row[key] if row[key] is not None else "")) for key in header])

        response = StreamingHttpResponse(csv_lines(), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="audit-events.{kind}"'
    return response


def _csv_safe(value: str) -> str:
    return "'" + value if value[:1] in {"=", "+", "-", "@", "\t", "\r"} else value
