"""Map and Parallel states: the inbox shows the requests of one execution together.

Each request is still decided on its own; the grouping only says they belong together. Rows
keep the page's order (newest first, or by deadline): a run of consecutive rows of one
execution that has several requests in the tab gets a header, which links to all of them.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ExecutionGroup:
    execution_arn: str
    # Requests of this execution in the tab, on every page (selectors.execution_counts).
    count: int
    # Consecutive rows of it on this page.
    shown: int

    @property
    def more(self) -> int:
        """Its requests in the tab outside this run (other pages, or further down this one)."""
        return self.count - self.shown


def mark_execution_groups(rows: Sequence, counts: Mapping[str, int]) -> Sequence:
    """Set `execution_group` (the header above it, or None) and `ends_execution_group` on each row.

    `counts`: requests per execution ARN in the tab. A run is at least one row: a lone request
    whose siblings sit elsewhere in the list still gets its header and link.
    """
    index = 0
    while index < len(rows):
        arn = rows[index].execution_arn
        end = index + 1
        if arn and counts.get(arn, 1) > 1:
            while end < len(rows) and rows[end].execution_arn == arn:
                end += 1
            group = ExecutionGroup(arn, counts[arn], end - index)
        else:
            group = None
        for position in range(index, end):
            rows[position].execution_group = group if position == index else None
            rows[position].ends_execution_group = group is not None and position == end - 1
        index = end
    return rows
