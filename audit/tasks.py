"""Publishing the audit chain head to the log, so a later rewrite can be proven against it."""

import logging

from celery import shared_task
from django.db import DatabaseError

from audit.exceptions import AuditChainBroken
from audit.selectors import audit_chain_head_get

logger = logging.getLogger(__name__)


@shared_task(name="audit.tasks.audit_chain_head_publish")
def audit_chain_head_publish() -> dict | None:
    """Log the chain head (entry id, hash, entry count) at INFO; WARNING when it cannot be read.

    Logs are shipped off the box: someone who later rewrites the log, even holding AUDIT_CHAIN_KEY,
    cannot change what was published, and `verify_audit_chain --expect-head ID:HASH` proves it.
    The line holds ids and a hash only, never entry data.
    """
    try:
        head = audit_chain_head_get()
    except AuditChainBroken as exc:
        logger.warning("audit chain head unavailable: %s", exc.message)
        return None
    except DatabaseError as exc:
        logger.warning("audit chain head unavailable: database error (%s)", type(exc).__name__)
        return None
    logger.info("audit chain head id=%s hash=%s count=%s", head["id"], head["hash"], head["count"])
    return head
