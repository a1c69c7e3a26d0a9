from audit.services import audit_entry_append
from support.selectors import LOOKUP_KIND, CustomerTimeline


def customer_lookup_audit(*, actor: str, timeline: CustomerTimeline, via: str) -> None:
    """Leave a trace of support reading a customer's story (`customer.looked_up`): one append.

    The term is a subject (stored as its keyed hash), so "who looked up this customer" is answered
    by searching the audit log for it; the data holds what matched and how much, never the term.
    """
    audit_entry_append(
        action="customer.looked_up",
        actor=actor,
        data={"matched_kinds": timeline.matched_kinds, "found": timeline.found, "via": via, "counts": timeline.counts},
        subjects={LOOKUP_KIND: timeline.query},
    )
