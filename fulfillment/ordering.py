"""The one ordering rule of provider facts: whether an incoming fact replaces the state on record.

Every effect fulfilment keeps (an entitlement, a subscription's state, a payment's revocation) is
dated by the provider time of the fact that set it (`state_at`, `occurred_at`), and deliveries arrive
in any order, so each effect asks this function before it overwrites one.
"""

from datetime import datetime


def fact_supersedes(
    *, current_at: datetime | None, incoming_at: datetime | None, current_ends: bool = False, incoming_ends: bool = False
) -> bool:
    """Whether a fact at `incoming_at` replaces the state a fact at `current_at` set.

    `*_ends` says the fact takes access away (a refund, a dispute, a revocation, a subscription that
    ended); otherwise it grants or keeps it.

    - Nothing on record (`current_at` None): the incoming fact applies.
    - A newer fact applies; an older one never does.
    - A fact without a time (`incoming_at` None) cannot be placed, so it never replaces a dated state.
    - Equal times: the ending fact wins whichever arrives first, so a refund (or a cancellation) and
      a payment with the same provider `created` converge on "revoked". Otherwise the incoming fact
      applies again: a redelivery of the same fact rewrites the same state (idempotent: the callers
      report and audit only a change of status), and two grants of one second (Stripe's checkout and
      its subscription's creation) merge into the row whatever their order, each keeping what the
      other knew (payment intent, expiry). Two ending facts of one second both revoke; the reason is
      the last one's.
    """
    if current_at is None:
        return True
    if incoming_at is None:
        return False
    if incoming_at != current_at:
        return incoming_at > current_at
    return incoming_ends or not current_ends
