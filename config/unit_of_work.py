"""A unit of work: the writes one transaction batches until its end, passed explicitly.

Event processing appends several audit entries and queues several e-mails in one transaction. Written
one by one, the first audit append would hold a chain shard's head (audit/services.py) for the rest of
the transaction, and each append would be its own round trips; so the code that owns the transaction creates a `UnitOfWork`, passes it as `uow=` to the
services it calls, and flushes it as its last step before the commit. A service given a unit of work
hands it the write instead of making it; given None (admin actions, commands, dead letters) it
writes at once. The object lives in `config` because every layer takes it, and it knows no app: each
app defers to its own writer.
"""

from collections.abc import Callable


class UnitOfWork:
    """Deferred writes, grouped by the function that writes them.

    `flush()` calls each writer once with its items in the order they were deferred, writers in the
    order they were first used, inside the caller's transaction. Nothing is written unless it is
    flushed: a caller that raises before `flush()` simply drops the unit of work.
    """

    def __init__(self) -> None:
        self._batches: dict[Callable[[list], object], list] = {}

    def defer(self, *, writer: Callable[[list], object], item: object) -> None:
        self._batches.setdefault(writer, []).append(item)

    def flush(self) -> None:
        # A writer may defer more (to another writer): drain until nothing is left.
        while self._batches:
            writer = next(iter(self._batches))
            writer(self._batches.pop(writer))
