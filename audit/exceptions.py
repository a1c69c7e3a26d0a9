from config.blind_index import UnknownSubjectKind  # noqa: F401  (raised by the blind index the audit log uses)
from config.exceptions import ApplicationError


class AuditError(ApplicationError):
    """A write the audit log refuses; a caller bug, so never worth retrying."""

    code = "audit_error"


class UnknownAuditAction(AuditError):
    code = "unknown_audit_action"


class InvalidAuditActor(AuditError):
    code = "invalid_audit_actor"


class AuditChainBroken(AuditError):
    """`verify_audit_chain` found an entry that was altered, removed or inserted."""

    code = "audit_chain_broken"

    def __init__(self, message: str, *, entry_id: int | None = None):
        super().__init__(message, extra={"entry_id": entry_id})
        self.entry_id = entry_id
