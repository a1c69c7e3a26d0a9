"""Publishing the audit chain head to the log, so a later rewrite can be proven against it, and anchoring
every shard head together (audit/models.py AuditChainAnchor)."""

import logging

from celery import shared_task
from django.db import DatabaseError

from audit.exceptions import AuditChainBroken
from audit.selectors import audit_chain_head_get
from audit.services import audit_chain_anchor_write

logger = logging.getLogger(__name__)


@shared_task(name="audit.tasks.audit_chain_head_publish")
def audit_chain_head_publish() -> dict | None:
    """Anchor every shard head, then log the chain head (newest entry id, hash, entry count) and the
    anchor at INFO; WARNING when it cannot be read.

    Logs are shipped off the box: someone who later rewrites the log, even holding AUDIT_CHAIN_KEY,
    cannot change what was published, and `verify_audit_chain --expect-head ID:HASH` proves it.
    The anchor ties the shards' tails together, so a shard cut short below it fails verification.
    The line holds ids and hashes only, never entry data.
    """
    try:
        head = audit_chain_head_get()
        anchor = audit_chain_anchor_write()
    except AuditChainBroken as exc:
        logger.warning("audit chain head unavailable: %s", exc.message)
        return None
    except DatabaseError as exc:
        logger.warning("audit chain head unavailable: database error (%s)", type(exc).__name__)
        return None
    head["anchor"] = f"{anchor.id}:{anchor.anchor_hash}"
    logger.info("audit chain head id=%s hash=%s count=%s anchor=%s", head["id"], head["hash"], head["count"], head["anchor"])
    return head
