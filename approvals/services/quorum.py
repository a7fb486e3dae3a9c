"""How votes add up to a decision when a request has options (docs/approver-input.md#quorum-and-options).

Pure: the decision (services/decisions.py) and the re-check before the callback
(services/recheck.py) count with the same rule.
"""

from collections.abc import Sequence

from approvals.models import ApprovalRequest, Vote


def choice_key(vote: Vote) -> tuple[str, ...]:
    """What a vote chose, comparable: the option ids (stored in the options' order); () without options."""
    return tuple(vote.choice or ())


def quorum_votes(votes: Sequence[Vote], vote: Vote) -> int:
    """How many of `votes` count toward closing the request the way `vote` would.

    Success votes add up only for the same choice (the same option, or the same set of options
    with `multiple`), so the first choice to reach `required` wins; every failure vote counts
    toward `rejectOn`, whichever failure option it chose (the vote that reaches it names the
    error). Without options every approval has the same (empty) choice: the rule before options.
    """
    if not vote.approve:
        return sum(1 for each in votes if not each.approve)
    return sum(1 for each in votes if each.approve and choice_key(each) == choice_key(vote))


def quorum_decider(request: ApprovalRequest, votes: Sequence[Vote], *, approve: bool) -> Vote | None:
    """The vote that meets the policy for this outcome among `votes` (in the order cast): the
    last vote of the first choice to reach the count; None when none does."""
    needed = request.required_approvals if approve else request.rejections_to_deny
    for index, vote in enumerate(votes):
        if vote.approve == approve and quorum_votes(votes[: index + 1], vote) >= needed:
            return vote
    return None
