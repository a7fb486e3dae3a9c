"""Observability under hostile input: what a queue sender or a stranger can do to metrics and logs.

Anyone who may send to the approval queue writes the whole message body (its state machine ARN
too), and anyone who reaches the web's port may call /healthz, /readyz and /metrics.
"""

from __future__ import annotations

import pytest

from approvals.ops import metrics


def label_values(metric, label: str) -> set[str]:
    return {sample.labels[label] for family in metric.collect() for sample in family.samples if label in sample.labels}


@pytest.fixture
def state_machine_labels():
    """The process's set of labelled names, restored afterwards (later tests label their own)."""
    kept = set(metrics._state_machine_labels)
    yield
    with metrics._state_machine_labels_lock:
        metrics._state_machine_labels.clear()
        metrics._state_machine_labels.update(kept)


@pytest.mark.django_db
@pytest.mark.usefixtures("state_machine_labels")
def test_a_sender_varying_the_state_machine_name_cannot_grow_the_ingested_series_without_bound(
    django_capture_on_commit_callbacks,
):
    limit = metrics.MAX_STATE_MACHINE_LABELS
    with django_capture_on_commit_callbacks(execute=True):
        for index in range(limit + 50):
            metrics.request_ingested(
                state_machine_arn=f"arn:aws:states:eu-west-1:123456789012:stateMachine:hostile-{index}"
            )

    values = label_values(metrics.REQUESTS_INGESTED, "state_machine")
    assert len(values) <= limit + 1
    assert "other" in values
    # A name seen before the limit was reached keeps its own series.
    with django_capture_on_commit_callbacks(execute=True):
        metrics.request_ingested(state_machine_arn="arn:aws:states:eu-west-1:123456789012:stateMachine:hostile-0")
    assert metrics.REQUESTS_INGESTED.labels("hostile-0")._value.get() >= 2
