"""The approver's forms: decide on the request page, confirm a signed link, filter the inbox."""

from django import forms

REJECT_NEEDS_COMMENT = "Say why you reject: the requester and the workflow see it."


class DecisionForm(forms.Form):
    """Approve or reject on the request page; a rejection needs a comment.

    The page's JavaScript marks the comment `required` only when Reject is pressed; this check
    is the one that counts (and the only one without JavaScript).
    """

    decision = forms.ChoiceField(choices=[("approve", "Approve"), ("reject", "Reject")])
    comment = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 3}))

    def clean(self):
        data = super().clean()
        if data.get("decision") == "reject" and not data.get("comment"):
            self.add_error("comment", REJECT_NEEDS_COMMENT)
        return data

    @property
    def approve(self) -> bool:
        return self.cleaned_data["decision"] == "approve"

    @property
    def only_the_comment_is_missing(self) -> bool:
        """Invalid just because a rejection came without a comment."""
        return set(self.errors) == {"comment"} and self.errors["comment"] == [REJECT_NEEDS_COMMENT]


class InboxFilterForm(forms.Form):
    """The inbox's query string: tab, search, filters, sort. Bad values fall back to defaults."""

    tab = forms.ChoiceField(required=False, choices=[])
    q = forms.CharField(required=False, max_length=200, strip=True, label="Search")
    machine = forms.CharField(required=False, max_length=2048, label="State machine")
    source = forms.CharField(required=False, max_length=20, label="Source")  # docs/sources.md
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
