"""The ordering rule every fulfilment effect asks before it overwrites a state."""

from datetime import UTC, datetime, timedelta

import pytest

from fulfillment.ordering import fact_supersedes

T = datetime(2026, 1, 1, tzinfo=UTC)
OLDER, NEWER = T - timedelta(seconds=1), T + timedelta(seconds=1)


def test_a_fact_applies_when_nothing_is_on_record():
    assert fact_supersedes(current_at=None, incoming_at=T)
    assert fact_supersedes(current_at=None, incoming_at=None)


@pytest.mark.parametrize("current_ends", [False, True])
@pytest.mark.parametrize("incoming_ends", [False, True])
def test_a_newer_fact_always_applies_and_an_older_one_never(current_ends, incoming_ends):
    kinds = {"current_ends": current_ends, "incoming_ends": incoming_ends}
    assert fact_supersedes(current_at=T, incoming_at=NEWER, **kinds)
    assert not fact_supersedes(current_at=T, incoming_at=OLDER, **kinds)


@pytest.mark.parametrize("incoming_ends", [False, True])
def test_a_fact_without_a_time_never_replaces_a_dated_state(incoming_ends):
    assert not fact_supersedes(current_at=T, incoming_at=None, incoming_ends=incoming_ends)


def test_on_a_tie_the_ending_fact_wins_whichever_arrives_first():
    # payment then refund of one second: the refund applies; refund then payment: the payment does not
    assert fact_supersedes(current_at=T, current_ends=False, incoming_at=T, incoming_ends=True)
    assert not fact_supersedes(current_at=T, current_ends=True, incoming_at=T, incoming_ends=False)


@pytest.mark.parametrize("ends", [False, True])
def test_on_a_tie_a_fact_of_the_same_kind_applies_again(ends):
    # a redelivery rewrites the same state; two grants of one second merge into the row
    assert fact_supersedes(current_at=T, current_ends=ends, incoming_at=T, incoming_ends=ends)
