"""The API's shapes: what it answers (read-only representations) and what it accepts."""

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from approvals import delivery, permissions, selectors
from approvals.models import IngestError
from approvals.templatetags.approvals_tags import callback_final
from approvals.templatetags.approvals_tags import callback_status as callback_status_text

MAX_COMMENT = 2000
MAX_MESSAGE = 4000


# ---------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------
class InboxQuerySerializer(serializers.Serializer):
    tab = serializers.ChoiceField(choices=list(selectors.INBOX_TABS), required=False, default="waiting")
    q = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")
    state_machine = serializers.CharField(required=False, allow_blank=True, max_length=2048, default="")
    due = serializers.ChoiceField(choices=["overdue", "soon"], required=False)
    sort = serializers.ChoiceField(choices=["received", "deadline"], required=False)
    cursor = serializers.CharField(required=False, allow_blank=True, max_length=80, default="")


MAX_CHOICES = 10  # the contract's limit of options
MAX_OPTION_ID = 64


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "minLength": 1, "maxLength": MAX_OPTION_ID},
            {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": MAX_OPTION_ID},
                "minItems": 1,
                "maxItems": MAX_CHOICES,
            },
        ],
        "description": "The chosen option's id, or a list of ids (a request with `multiple`).",
    }
)
class OptionChoiceField(serializers.Field):
    """One option id or a list of them; always a list inside."""

    default_error_messages = {"invalid": "One option id, or a list of 1 to 10 option ids (each 1 to 64 characters)."}

    def to_internal_value(self, data):
        ids = [data] if isinstance(data, str) else data
        if not isinstance(ids, list) or not 0 < len(ids) <= MAX_CHOICES:
            self.fail("invalid")
        if not all(isinstance(each, str) and 0 < len(each) <= MAX_OPTION_ID for each in ids):
            self.fail("invalid")
        return ids

    def to_representation(self, value):
        return value


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": True,
        "description": "Answers to the request's form: field name → value, typed as its schema says.",
    }
)
class AnswersField(serializers.Field):
    default_error_messages = {"invalid": "The answers must be a JSON object."}

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            self.fail("invalid")
        return data

    def to_representation(self, value):
        return value


class DecisionInputSerializer(serializers.Serializer):
    """`decision` (approve/reject) for a request without options; `choice` for one with options
    (its outcome says approve or reject; with both, they must agree). Unknown members are refused:
    a misspelt `choice` must not turn into a plain approval."""

    decision = serializers.ChoiceField(choices=["approve", "reject"], required=False)
    choice = OptionChoiceField(required=False)
    answers = AnswersField(required=False)
    comment = serializers.CharField(required=False, allow_blank=True, max_length=MAX_COMMENT, default="")

    def validate(self, attrs):
        unknown = sorted(set(self.initial_data) - set(self.fields)) if isinstance(self.initial_data, dict) else []
        if unknown:
            raise serializers.ValidationError({name[:64]: ["Not a member of a decision."] for name in unknown[:10]})
        if "decision" not in attrs and "choice" not in attrs:
            raise serializers.ValidationError({"decision": ["Give `decision` (approve or reject) or `choice`."]})
        return attrs


class MessageInputSerializer(serializers.Serializer):
    text = serializers.CharField(max_length=MAX_MESSAGE)


class ReasonInputSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=1000)


class ReassignInputSerializer(ReasonInputSerializer):
    users = serializers.ListField(child=serializers.EmailField(), required=False, default=list, max_length=100)
    groups = serializers.ListField(
        child=serializers.CharField(max_length=150), required=False, default=list, max_length=100
    )
    mode = serializers.ChoiceField(choices=["replace", "add"], required=False, default="replace")


class DelegationInputSerializer(serializers.Serializer):
    delegate_email = serializers.EmailField()
    starts_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    ends_at = serializers.DateTimeField()
    reason = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")


class IngestErrorQuerySerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=IngestError.Status.choices, required=False, default=IngestError.Status.OPEN
    )
    cursor = serializers.CharField(required=False, allow_blank=True, max_length=40, default="")


class AuditQuerySerializer(serializers.Serializer):
    action = serializers.CharField(required=False, allow_blank=True, max_length=64, default="")
    request = serializers.UUIDField(required=False, allow_null=True, default=None)
    actor = serializers.CharField(required=False, allow_blank=True, max_length=254, default="")
    since = serializers.DateTimeField(required=False, allow_null=True, default=None)
    until = serializers.DateTimeField(required=False, allow_null=True, default=None)
    cursor = serializers.CharField(required=False, allow_blank=True, max_length=40, default="")
    format = serializers.ChoiceField(choices=["json", "csv", "jsonl"], required=False)


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------
def _email(user) -> str | None:
    return (user.email or user.get_username()) if user is not None else None


class RequestSummarySerializer(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    title = serializers.CharField()
    status = serializers.CharField()
    requester = serializers.SerializerMethodField()
    state_machine = serializers.SerializerMethodField()
    state = serializers.CharField(source="state_name")
    created_at = serializers.DateTimeField(source="received_at")
    expires_at = serializers.DateTimeField(source="deadline", allow_null=True)
    claimed_by = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    def get_requester(self, obj) -> str | None:
        return obj.requester_email or None

    def get_state_machine(self, obj) -> str | None:
        return obj.state_machine_arn or None

    def get_claimed_by(self, obj) -> str | None:
        return _email(obj.claimed_by) if obj.is_pending and obj.claimed_by_id else None

    def get_url(self, obj) -> str:
        request = self.context.get("request")
        path = reverse("api:request", kwargs={"public_id": obj.public_id})
        return request.build_absolute_uri(path) if request is not None else path


class VoteSerializer(serializers.Serializer):
    by = serializers.SerializerMethodField()
    on_behalf_of = serializers.SerializerMethodField()
    decision = serializers.SerializerMethodField()
    comment = serializers.CharField()
    group = serializers.CharField(source="group_name")
    at = serializers.DateTimeField(source="created_at")
    choice = serializers.SerializerMethodField()
    answers = serializers.SerializerMethodField()

    def get_choice(self, obj) -> list[str] | None:
        """The option id(s) chosen, or null for a request without options."""
        return getattr(obj, "choice", None) or None

    @extend_schema_field({"type": "object", "additionalProperties": True, "nullable": True})
    def get_answers(self, obj):
        return getattr(obj, "answers", None) or None

    def get_by(self, obj) -> str:
        return _email(obj.user)

    def get_on_behalf_of(self, obj) -> str | None:
        return _email(obj.on_behalf_of)

    def get_decision(self, obj) -> str:
        return "approve" if obj.approve else "reject"


class MessageSerializer(serializers.Serializer):
    kind = serializers.CharField()
    author = serializers.CharField(source="author_label")
    at = serializers.DateTimeField(source="created_at")
    text = serializers.CharField()


class PolicySerializer(serializers.Serializer):
    required_approvals = serializers.IntegerField()
    rejections_to_deny = serializers.IntegerField()
    distinct_groups = serializers.BooleanField()
    sod_distinct_levels = serializers.BooleanField()
    sod_exclude_requester_groups = serializers.BooleanField()


class CallbackSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    status = serializers.CharField()
    text = serializers.SerializerMethodField()
    final = serializers.SerializerMethodField()
    attempts = serializers.IntegerField()

    def get_text(self, obj) -> str:
        return str(callback_status_text(obj))

    def get_final(self, obj) -> bool:
        return bool(callback_final(obj))


class RefusalSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class OptionSerializer(serializers.Serializer):
    id = serializers.CharField()
    label = serializers.CharField()
    outcome = serializers.ChoiceField(choices=["success", "failure"])
    error = serializers.CharField(required=False, help_text="A failure option's Step Functions error.")
    default = serializers.BooleanField(required=False)


class RequestSerializer(RequestSummarySerializer):
    details = serializers.JSONField()
    options = OptionSerializer(many=True, allow_null=True, help_text="null: the choices are approve and reject.")
    multiple = serializers.BooleanField(source="multiple_options")
    form = serializers.SerializerMethodField()
    execution = serializers.CharField(source="execution_arn")
    decided_at = serializers.DateTimeField(allow_null=True)
    decided_by = serializers.SerializerMethodField()
    decision_comment = serializers.CharField()
    awaiting_info = serializers.BooleanField()
    approvers = serializers.SerializerMethodField()
    policy = serializers.SerializerMethodField()
    votes = VoteSerializer(many=True, source="votes.all")
    conversation = MessageSerializer(many=True, source="info_messages.all")
    status_text = serializers.SerializerMethodField()
    callback = serializers.SerializerMethodField()
    may_decide = serializers.SerializerMethodField()
    refusal = serializers.SerializerMethodField()

    def get_decided_by(self, obj) -> str | None:
        return _email(obj.decided_by)

    @extend_schema_field(
        {"type": "object", "additionalProperties": True, "nullable": True, "description": "The form's JSON Schema."}
    )
    def get_form(self, obj):
        return obj.form  # the fields in the message's order

    def get_approvers(self, obj) -> dict[str, list[str]]:
        assignments = list(obj.assignments.all())
        return {
            "users": sorted(a.value for a in assignments if a.kind == "user"),
            "groups": sorted(a.value for a in assignments if a.kind == "group"),
        }

    @extend_schema_field(PolicySerializer)
    def get_policy(self, obj):
        return PolicySerializer(obj).data

    def get_status_text(self, obj) -> str:
        """The status in the request page's words: "Closed by Step Functions" is not "Expired in
        the portal", though both are `expired`."""
        return delivery.request_status_label(obj)

    @extend_schema_field(CallbackSerializer(allow_null=True))
    def get_callback(self, obj):
        callback = getattr(obj, "callback", None)
        return CallbackSerializer(callback).data if callback is not None else None

    def _refusal(self, obj):
        cache = self.context.setdefault("_refusals", {})
        if obj.pk not in cache:
            user = self.context["request"].user
            cache[obj.pk] = permissions.decision_refusal(user, obj)
        return cache[obj.pk]

    def get_may_decide(self, obj) -> bool:
        return self._refusal(obj) is None

    @extend_schema_field(RefusalSerializer(allow_null=True))
    def get_refusal(self, obj):
        refusal = self._refusal(obj)
        return {"code": refusal.code, "message": refusal.message} if refusal is not None else None


class InboxPageSerializer(serializers.Serializer):
    results = RequestSummarySerializer(many=True)
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)


class DecisionResultSerializer(serializers.Serializer):
    request = RequestSerializer()
    vote = VoteSerializer(allow_null=True)


class DelegationSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    delegator = serializers.SerializerMethodField()
    delegate = serializers.SerializerMethodField()
    starts_at = serializers.DateTimeField()
    ends_at = serializers.DateTimeField()
    reason = serializers.CharField()
    state = serializers.SerializerMethodField()

    def get_delegator(self, obj) -> str:
        return _email(obj.delegator)

    def get_delegate(self, obj) -> str:
        return _email(obj.delegate)

    def get_state(self, obj) -> str:
        return getattr(obj, "state", "")


class DelegationsSerializer(serializers.Serializer):
    given = DelegationSerializer(many=True)
    received = DelegationSerializer(many=True)


class IngestErrorSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    sqs_message_id = serializers.CharField()
    code = serializers.CharField()
    reason = serializers.CharField()
    body = serializers.CharField(source="body_redacted")
    receive_count = serializers.IntegerField()
    first_seen_at = serializers.DateTimeField()
    last_seen_at = serializers.DateTimeField()
    status = serializers.CharField()


class IngestErrorPageSerializer(serializers.Serializer):
    results = IngestErrorSerializer(many=True)
    next = serializers.URLField(allow_null=True)


class AuditEventSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    at = serializers.DateTimeField(source="created_at")
    action = serializers.CharField()
    actor = serializers.CharField(source="actor_label")
    request = serializers.SerializerMethodField()
    data = serializers.JSONField()

    def get_request(self, obj) -> str | None:
        return str(obj.request.public_id) if obj.request_id else None


class AuditPageSerializer(serializers.Serializer):
    results = AuditEventSerializer(many=True)
    next = serializers.URLField(allow_null=True)
