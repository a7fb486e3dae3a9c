"""The approver's forms: decide on the request page, confirm a signed link, filter the inbox."""

from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC

from django import forms
from django.forms.utils import ErrorDict

from approvals.answers import NON_FIELD_ERRORS, InvalidAnswers, answers_clean
from approvals.form_schema import max_length, parse_datetime
from approvals.models import ApprovalRequest

ANSWERS_NEED_CORRECTING = "Some answers need correcting: see the message beside each field."

REJECT_NEEDS_COMMENT = "Say why you reject: the requester and the workflow see it."
# The form's inputs are named "answer-<field>", so no field of a message's form can collide with
# the page's own inputs (decision, comment, the CSRF token).
ANSWER_PREFIX = "answer-"
# The button of a request with `multiple`: "decide with the ticked success options".
CHOSEN_SUCCESS = "__chosen__"


@dataclass
class AnswerInput:
    """One field of the message's form as the page renders it (a real input of the right type)."""

    name: str
    input_name: str
    label: str
    help: str
    required: bool
    kind: str  # text | email | date | datetime-local | number | checkbox | select
    value: str = ""
    checked: bool = False
    error: str = ""
    choices: list[tuple[str, str]] = dataclass_field(default_factory=list)
    attrs: dict[str, str] = dataclass_field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"id_{self.input_name}"


def answer_inputs(schema: dict | None, *, data=None, errors: dict[str, str] | None = None) -> list[AnswerInput]:
    """The form's fields, filled from `data` (a POST) or else the schema's defaults."""
    inputs = []
    required = set((schema or {}).get("required", ()))
    for name, field in ((schema or {}).get("properties") or {}).items():
        item = AnswerInput(
            name=name,
            input_name=ANSWER_PREFIX + name,
            label=field.get("title") or name.replace("_", " ").capitalize(),
            help=field.get("description", ""),
            required=name in required,
            kind=_input_kind(field),
            error=(errors or {}).get(name, ""),
        )
        if item.kind == "checkbox":
            item.checked = bool(data.get(item.input_name)) if data is not None else field.get("default") is True
        else:
            raw = data.get(item.input_name, "") if data is not None else _shown_default(field)
            item.value = raw if isinstance(raw, str) else ""
        if "enum" in field:
            item.choices = [(_shown(value), _shown(value)) for value in field["enum"]]
        item.attrs = _input_attrs(field, item.kind)
        inputs.append(item)
    return inputs


def _input_kind(field: dict) -> str:
    if "enum" in field:
        return "select"
    if field["type"] == "boolean":
        return "checkbox"
    if field["type"] in ("integer", "number"):
        return "number"
    return {"date": "date", "date-time": "datetime-local", "email": "email"}.get(field.get("format", ""), "text")


def _input_attrs(field: dict, kind: str) -> dict[str, str]:
    """Hints for the browser and the phone's keyboard; the server checks every rule again."""
    attrs: dict[str, str] = {}
    if kind == "number":
        attrs["step"] = "1" if field["type"] == "integer" else "any"
        attrs["inputmode"] = "numeric" if field["type"] == "integer" else "decimal"
        for key in ("minimum", "maximum"):
            if key in field:
                attrs[key[:3]] = _shown(field[key])
    if kind == "datetime-local":
        attrs["step"] = "1"  # seconds may be given
    if kind in ("text", "email") and field["type"] == "string":
        attrs["maxlength"] = str(max_length(field))
        if "minLength" in field:
            attrs["minlength"] = str(field["minLength"])
    if kind == "email":
        attrs["autocomplete"] = "email"
    return attrs


def _shown(value) -> str:
    if isinstance(value, bool):
        return "on" if value else ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _shown_default(field: dict) -> str:
    if "default" not in field:
        return ""
    default = field["default"]
    if field.get("format") == "date-time" and isinstance(default, str):
        # <input type=datetime-local> takes "YYYY-MM-DDTHH:MM[:SS]" without a zone (the page says UTC).
        parsed = parse_datetime(default)
        return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") if parsed else ""
    return _shown(default)


class DecisionForm(forms.Form):
    """Choose an option (Approve/Reject, or the message's own options) and fill in the message's
    form, on the request page; a failure option needs a comment.

    The page's JavaScript marks the comment `required` only when a failure option is pressed;
    this check is the one that counts (and the only one without JavaScript). The answers are
    checked here to show each error beside its field, and again by the decision service, which
    trusts no channel.
    """

    decision = forms.ChoiceField(choices=[])
    comment = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 3}))

    def __init__(self, data=None, *, approval: ApprovalRequest, **kwargs):
        super().__init__(data, **kwargs)
        self.approval = approval
        self.options = approval.choices()
        ids = [(option.id, option.label) for option in self.options]
        if approval.multiple_options:
            ids.append((CHOSEN_SUCCESS, "Continue with the chosen options"))
        self.fields["decision"].choices = ids
        self.answer_errors: dict[str, str] = {}
        self.answers: dict = {}

    @property
    def successes(self):
        return [option for option in self.options if option.outcome == "success"]

    @property
    def multiple(self) -> bool:
        return self.approval.multiple_options

    def ticked(self) -> list[str]:
        """The success options ticked (a request with `multiple`), or those marked default."""
        if self.data:
            return self.data.getlist("choice") if hasattr(self.data, "getlist") else []
        return [option.id for option in self.successes if option.default]

    def raw_answers(self) -> dict:
        """The form's own inputs, as posted (strings; a list when one was sent twice)."""
        if not self.approval.form_schema or not self.data:
            return {}
        names = (self.approval.form_schema.get("properties") or {}).keys()
        posted = {}
        for name in names:
            values = self.data.getlist(ANSWER_PREFIX + name) if hasattr(self.data, "getlist") else []
            if values:
                posted[name] = values if len(values) > 1 else values[0]
        return posted

    def clean(self):
        data = super().clean()
        decision = data.get("decision")
        if not decision:
            return data
        if decision == CHOSEN_SUCCESS:
            ticked = set(self.ticked())
            chosen = [option for option in self.successes if option.id in ticked]
            if not chosen:
                raise forms.ValidationError("Tick at least one option.", code="choice_invalid")
        else:
            chosen = [option for option in self.options if option.id == decision]
        self.chosen = chosen
        self.outcome = chosen[0].outcome
        if self.outcome == "failure" and not data.get("comment"):
            self.add_error("comment", REJECT_NEEDS_COMMENT)
        if self.approval.form_schema:
            try:
                self.answers = answers_clean(
                    self.approval.form, self.raw_answers(), from_form=True, outcome=self.outcome
                )
            except InvalidAnswers as invalid:
                self.answer_errors = invalid.errors
                raise forms.ValidationError(ANSWERS_NEED_CORRECTING, code="answers_invalid") from None
        return data

    @property
    def approve(self) -> bool | None:
        """For a request without options (approve/reject); None with options (the choice says)."""
        if self.approval.options or not getattr(self, "chosen", None):
            return None
        return self.outcome == "success"

    @property
    def choice(self) -> list[str] | None:
        """The option ids for the decision service; None on a request without options."""
        return [option.id for option in getattr(self, "chosen", ())] if self.approval.options else None

    @property
    def action(self) -> str:
        """approve or reject: the confirm page's colours and wording."""
        return "approve" if self.outcome == "success" else "reject"

    @property
    def fixable_on_the_page(self) -> bool:
        """Invalid only for what the approver fixes on the request page (the comment, the
        answers, a tick): a real option was pressed."""
        return self.is_bound and bool(self.cleaned_data.get("decision"))

    def unchecked(self) -> "DecisionForm":
        """The page filled in as posted, without error messages ("Change" on the confirm page)."""
        self.is_valid()
        self._errors = ErrorDict()
        self.answer_errors = {}
        return self

    @property
    def whole_form_error(self) -> str:
        """An error about the answers as a whole (a field the form does not have)."""
        return self.answer_errors.get(NON_FIELD_ERRORS, "")

    def answer_inputs(self) -> list[AnswerInput]:
        return answer_inputs(self.approval.form, data=self.data if self.is_bound else None, errors=self.answer_errors)

    def shown_answers(self) -> list[tuple[str, str]]:
        """(label, answer) for the confirm page, as the workflow will get them."""
        labels = {item.name: item.label for item in answer_inputs(self.approval.form)}
        return [(labels[name], _answer_text(value)) for name, value in self.answers.items()]


def _answer_text(value) -> str:
    if isinstance(value, bool):
        return "Yes" if value else "No"
    return str(value)


class InboxFilterForm(forms.Form):
    """The inbox's query string: tab, search, filters, sort. Bad values fall back to defaults."""

    tab = forms.ChoiceField(required=False, choices=[])
    q = forms.CharField(required=False, max_length=200, strip=True, label="Search")
    machine = forms.CharField(required=False, max_length=2048, label="State machine")
    due = forms.ChoiceField(
        required=False,
        label="Deadline",
        choices=[("", "Any deadline"), ("overdue", "Overdue"), ("soon", "Due within 24 hours")],
    )
    sort = forms.ChoiceField(
        required=False, label="Sort by", choices=[("", "Newest first"), ("deadline", "Deadline, closest first")]
    )

    def __init__(self, *args, tabs: dict[str, str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tab"].choices = list(tabs.items())

    def value(self, name: str) -> str:
        """The cleaned value, or the default ("") when it was invalid."""
        self.is_valid()  # invalid fields are left out of cleaned_data
        return self.cleaned_data.get(name) or ""


class LinkConfirmForm(forms.Form):
    comment = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 3}))
