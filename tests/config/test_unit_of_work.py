from config.unit_of_work import UnitOfWork


def test_each_writer_gets_its_items_once_in_order_writers_in_order_of_first_use():
    calls = []

    def first(items):
        calls.append(("first", items))

    def second(items):
        calls.append(("second", items))

    uow = UnitOfWork()
    uow.defer(writer=first, item=1)
    uow.defer(writer=second, item="a")
    uow.defer(writer=first, item=2)
    uow.flush()

    assert calls == [("first", [1, 2]), ("second", ["a"])]


def test_a_writer_that_defers_more_is_drained_and_a_second_flush_writes_nothing():
    calls = []

    def audit(items):
        calls.append(("audit", items))

    def deliveries(items):
        calls.append(("deliveries", items))
        uow.defer(writer=audit, item="late")

    uow = UnitOfWork()
    uow.defer(writer=deliveries, item="mail")
    uow.flush()
    uow.flush()

    assert calls == [("deliveries", ["mail"]), ("audit", ["late"])]
