"""Forms for setting a delegation: the out-of-office page's and the admin's.

Both check through services.delegations.delegation_check (no writes), so a refusal shows next
to the field it concerns; the view or admin then calls delegation_set, which checks again.
Times are typed in the portal's time zone (PORTAL_TIME_ZONE), and the labels say which.
"""

from django import forms
from django.utils import timezone

from approvals.models import Delegation, User
from approvals.services import ApprovalError
from approvals.services.delegations import delegation_check

# Which field a refusal from the service belongs to (others go on top of the form).
ERROR_FIELDS = {
    "unknown_delegate": "delegate_email",
    "bad_input": "delegate_email",
    "bad_period": "ends_at",
    "not_allowed": "delegator_email",  # the admin's form: a service account is away
}
DATETIME_FORMAT = "%Y-%m-%dT%H:%M"


def _datetime_field(*, required: bool, help_text: str) -> forms.DateTimeField:
    return forms.DateTimeField(
        required=required,
        help_text=help_text,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format=DATETIME_FORMAT),
    )


def add_service_error(form: forms.BaseForm, error: ApprovalError) -> None:
    field = ERROR_FIELDS.get(error.code)
    form.add_error(field if field in form.fields else None, error.message)


class DelegationFieldsMixin:
    """Checks delegate_email, starts_at, ends_at for a delegator, as set by `actor`."""

    def _set_up(self, *, actor: User | None) -> None:
        self.actor = actor
        zone = timezone.get_current_timezone_name()
        labels = {"starts_at": f"From ({zone}, optional)", "ends_at": f"Until ({zone})"}
        for name, label in labels.items():
            if name in self.fields:  # the admin's read-only view of a delegation has no fields
                self.fields[name].label = label

    def check_delegation(self, data: dict, delegator: User | None) -> dict:
        if delegator is None or self.actor is None or self.errors.keys() & {"delegate_email", "starts_at", "ends_at"}:
            return data
        try:
            _, starts_at, _ = delegation_check(
                delegator=delegator,
                delegate_email=data["delegate_email"],
                starts_at=data.get("starts_at"),
                ends_at=data["ends_at"],
                actor=self.actor,
            )
        except ApprovalError as error:
            add_service_error(self, error)
        else:
            data["starts_at"] = starts_at
        return data


def _delegate_email_field() -> forms.EmailField:
    return forms.EmailField(
        label="Who stands in (email)",
        max_length=254,
        help_text="A colleague who has signed in to the portal at least once.",
    )


def _starts_at_field() -> forms.DateTimeField:
    return _datetime_field(required=False, help_text="Leave empty to start now.")


def _ends_at_field() -> forms.DateTimeField:
    return _datetime_field(
        required=True, help_text="When this moment comes, the stand-in no longer sees or decides the requests."
    )


def _reason_field() -> forms.CharField:
    return forms.CharField(
        label="Reason (optional)", required=False, max_length=200, help_text="For example: holiday, parental leave."
    )


class DelegationForm(DelegationFieldsMixin, forms.Form):
    """The out-of-office page: the signed-in user delegates their own approvals."""

    delegate_email = _delegate_email_field()
    starts_at = _starts_at_field()
    ends_at = _ends_at_field()
    reason = _reason_field()

    def __init__(self, *args, user: User, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self._set_up(actor=user)

    def clean(self):
        return self.check_delegation(super().clean(), self.user)


class DelegationAdminForm(DelegationFieldsMixin, forms.ModelForm):
    """The admin's "add": an admin sets a delegation for someone; saved by delegation_set."""

    delegator_email = forms.EmailField(
        label="Who is away (email)", max_length=254, help_text="Their requests go to the person below as well."
    )
    delegate_email = _delegate_email_field()
    starts_at = _starts_at_field()
    ends_at = _ends_at_field()
    reason = _reason_field()

    class Meta:
        model = Delegation
        fields = ["starts_at", "ends_at", "reason"]

    def __init__(self, *args, actor: User | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._set_up(actor=actor)
        self.delegator = None

    def clean_delegator_email(self) -> str:
        email = self.cleaned_data["delegator_email"].strip().lower()
        found = list(User.objects.filter(email__iexact=email).order_by("pk")[:2])
        if len(found) != 1:
            raise forms.ValidationError(
                "Nobody with this email uses the portal." if not found else "Several accounts have this email."
            )
        self.delegator = found[0]
        return email

    def clean(self):
        return self.check_delegation(super().clean(), self.delegator)
