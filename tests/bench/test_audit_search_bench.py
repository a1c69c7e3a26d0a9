"""bench/audit_search.py's generator and loader at a tiny scale, so the benchmark does not rot."""

from io import StringIO

import pytest
from django.core.management import call_command

from audit.models import AuditAction, AuditEntry, AuditSubject
from audit.selectors import audit_entry_filter_subject, audit_entry_list
from bench.audit_search import (
    AuditStories,
    absent_email,
    audit_log_load,
    buyer_customer,
    buyer_email,
)


@pytest.fixture
def loaded(db):
    stories = AuditStories(customers=40, seed=3)
    result = audit_log_load(stories=stories, entries=2000, batch_size=700)
    return stories, result


def test_the_loader_appends_exactly_the_entries_asked_for_as_one_valid_chain(loaded):
    _, result = loaded
    assert result["entries"] == 2000 and AuditEntry.objects.count() == 2000
    out = StringIO()
    call_command("verify_audit_chain", stdout=out)
    # The head is the newest entry; ids come from a sequence the session's other tests also use.
    newest = AuditEntry.objects.order_by("-id").values_list("id", "entry_hash").first()
    assert out.getvalue().strip().splitlines()[-1] == f"OK 2000 entries, head {newest[0]}:{newest[1]}"


def test_entries_carry_the_buyers_identifiers_and_contract_actions(loaded):
    actions = set(AuditEntry.objects.values_list("action", flat=True))
    assert actions <= set(AuditAction.values)
    assert {"webhook.received", "entitlement.granted", "notification.sent"} <= actions
    kinds = set(AuditSubject.objects.values_list("kind", flat=True))
    assert {"email", "customer", "user", "payment_intent", "subscription"} <= kinds
    # Searchable identifiers are stored only as hashes.
    assert not AuditSubject.objects.filter(value_hash__contains="@").exists()


def test_a_search_by_a_buyers_email_finds_every_entry_of_theirs_and_an_unknown_one_nothing(loaded):
    stories, _ = loaded
    counts = stories.entries_per_customer
    heaviest = max(range(len(counts)), key=counts.__getitem__)
    assert counts[heaviest] > 2000 / 40  # a long tail: the heaviest buyer has more than the mean
    found = audit_entry_filter_subject(audit_entry_list(), q=buyer_email(heaviest).upper())
    assert found.count() == counts[heaviest]
    assert audit_entry_filter_subject(audit_entry_list(), q=buyer_customer(heaviest)).count() == counts[heaviest]
    assert not audit_entry_filter_subject(audit_entry_list(), q=absent_email(1)).exists()
