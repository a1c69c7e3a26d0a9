"""The events table partitioned by month (issue 13): migration 0011 converts a populated table in
place, idempotency keys stay unique across partitions (webhooks_eventkey), and inserts land in their
month's partition or in DEFAULT, never failing."""

import json
from datetime import datetime, timedelta, timezone

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone as dj_timezone

from config import encryption
from config.ids import uuid7
from providers import scheme_get
from tests.conftest import post_json, signed_headers
from tests.deadletters.factories import event_create
from webhooks.models import EventKey, WebhookEvent
from webhooks.partitions import event_partitions, event_partitions_ensure

BEFORE = [("webhooks", "0009_webhookevent_traceparent")]


def _migrate(target):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(target)


def _latest():
    executor = MigrationExecutor(connection)
    return executor.loader.graph.leaf_nodes()


def _partition_of(event_id) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM webhooks_webhookevent WHERE id = %s", [event_id])
        return cursor.fetchone()[0]


def _month_start(moment: datetime, months_ahead: int) -> datetime:
    month = moment.month - 1 + months_ahead
    return datetime(moment.year + month // 12, month % 12 + 1, 1, tzinfo=timezone.utc)


def _stripe_body(event_id: str, amount: int = 1500) -> bytes:
    return json.dumps({"id": event_id, "object": "event", "type": "invoice.paid", "created": 1700000000, "livemode": True,
                       "pending_webhooks": 1, "data": {"object": {"id": "in_1", "object": "invoice", "amount_paid": amount}}},
                      separators=(",", ":")).encode()


@pytest.mark.django_db(transaction=True)
def test_migration_converts_a_populated_table_and_old_keys_stay_taken(client, stripe_endpoint, stripe_secret):
    body = _stripe_body("evt_before_partitioning")
    content_hash = scheme_get("stripe").content_hash(json.loads(body))
    old_id = uuid7()
    _migrate(BEFORE)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO webhooks_webhookevent (id, endpoint_id, idempotency_key, provider_event_id, event_type, status, "
                "content_hash, body_encrypted, headers_encrypted, received_at, attempts, last_error, lease_holder) "
                "VALUES (%s, %s, %s, %s, 'invoice.paid', 'processed', %s, %s, %s, %s, 1, '', '')",
                [old_id, stripe_endpoint.id, "stripe:evt_before_partitioning", "evt_before_partitioning", content_hash,
                 encryption.encrypt(body), encryption.encrypt(b"{}"), dj_timezone.now() - timedelta(days=200)],
            )
            cursor.execute(
                "INSERT INTO webhooks_webhookevent (id, endpoint_id, idempotency_key, provider_event_id, event_type, status, "
                "content_hash, body_encrypted, headers_encrypted, received_at, attempts, last_error, lease_holder) "
                "SELECT gen_random_uuid(), %s, 'stripe:evt_bulk_' || n, 'evt_bulk_' || n, 'invoice.paid', 'processed', "
                "'h', '\\x00', '\\x00', now() - n * interval '1 day', 1, '', '' FROM generate_series(1, 300) AS n",
                [stripe_endpoint.id],
            )
    finally:
        _migrate(_latest())

    # Every row is still there and readable, in the partition of what came before partitioning.
    assert WebhookEvent.objects.count() == 301 and EventKey.objects.count() == 301
    old = WebhookEvent.objects.get(id=old_id)
    assert encryption.decrypt(old.body_encrypted) == body
    assert _partition_of(old_id) == "webhooks_webhookevent_before"
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE relname = 'webhooks_webhookevent'")
        assert cursor.fetchone() == ("p",)

    # A redelivery of the event stored before the migration is a duplicate, not a second row ...
    again = body.replace(b'"pending_webhooks":1', b'"pending_webhooks":2')
    response = post_json(client, "/webhooks/stripe/", again, signed_headers("stripe", stripe_secret, again))
    assert response.status_code == 200 and response.json()["status"] == "duplicate"
    assert WebhookEvent.objects.filter(idempotency_key="stripe:evt_before_partitioning").count() == 1
    # ... and different content under its key is a conflict.
    changed = _stripe_body("evt_before_partitioning", amount=9900)
    response = post_json(client, "/webhooks/stripe/", changed, signed_headers("stripe", stripe_secret, changed))
    assert response.status_code == 409 and response.json()["error"] == "idempotency_conflict"
    assert WebhookEvent.objects.count() == 301


@pytest.mark.django_db
def test_a_new_event_and_its_key_are_stored_together_and_a_duplicate_answers_from_the_key(client, stripe_endpoint, stripe_secret):
    body = _stripe_body("evt_keyed")
    first = post_json(client, "/webhooks/stripe/", body, signed_headers("stripe", stripe_secret, body))
    second = post_json(client, "/webhooks/stripe/", body, signed_headers("stripe", stripe_secret, body))

    assert first.json()["status"] == "accepted" and second.json()["status"] == "duplicate"
    event = WebhookEvent.objects.get()
    key = EventKey.objects.get()
    assert (key.idempotency_key, key.event_id, key.content_hash) == ("stripe:evt_keyed", event.id, event.content_hash)


@pytest.mark.django_db
def test_inserts_land_in_their_months_partition_and_a_month_without_one_in_default(stripe_endpoint):
    now = dj_timezone.now()
    next_month = event_create(endpoint=stripe_endpoint, received_at=_month_start(now, 1) + timedelta(days=3))
    far = event_create(endpoint=stripe_endpoint, received_at=_month_start(now, 24))
    this_month = event_create(endpoint=stripe_endpoint, received_at=now)

    assert _partition_of(next_month.id) == f"webhooks_webhookevent_p{_month_start(now, 1):%Y_%m}"
    assert _partition_of(far.id) == "webhooks_webhookevent_default"
    assert _partition_of(this_month.id) in ("webhooks_webhookevent_before", f"webhooks_webhookevent_p{now:%Y_%m}")
    assert WebhookEvent.objects.get(id=far.id).received_at == _month_start(now, 24)


@pytest.mark.django_db
def test_partitions_are_created_ahead_and_a_month_already_in_default_is_left_there(stripe_endpoint):
    now = dj_timezone.now()
    month = lambda n: f"webhooks_webhookevent_p{_month_start(now, n):%Y_%m}"  # noqa: E731
    stray = event_create(endpoint=stripe_endpoint, received_at=_month_start(now, 5) + timedelta(hours=1))
    names = {name for name, _ in event_partitions()}
    assert {month(1), month(2), month(3), "webhooks_webhookevent_default"} <= names and month(4) not in names

    created = event_partitions_ensure(months_ahead=6)

    names = {name for name, _ in event_partitions()}
    assert created == 2 and {month(4), month(6)} <= names
    assert month(5) not in names  # DEFAULT holds a row of that month: not moved, not lost, no failure
    assert _partition_of(stray.id) == "webhooks_webhookevent_default"
    assert event_partitions_ensure(months_ahead=6) == 0


@pytest.mark.django_db
def test_a_redelivery_is_answered_in_one_round_trip_like_a_new_event(stripe_endpoint, stripe_secret, django_assert_num_queries):
    from webhooks.receiving import endpoint_cache_clear, webhook_event_receive

    endpoint_cache_clear()
    warm = _stripe_body("evt_warm")
    webhook_event_receive(slug="stripe", body=warm, headers=signed_headers("stripe", stripe_secret, warm))  # loads the keys
    body = _stripe_body("evt_round_trips")

    with django_assert_num_queries(1):
        assert webhook_event_receive(slug="stripe", body=body, headers=signed_headers("stripe", stripe_secret, body)).created
    with django_assert_num_queries(1):
        again = webhook_event_receive(slug="stripe", body=body, headers=signed_headers("stripe", stripe_secret, body))
    assert not again.created


@pytest.mark.django_db(transaction=True)
def test_a_first_delivery_committed_while_the_insert_waited_is_still_found(stripe_endpoint, stripe_secret):
    """The statement's snapshot predates the other transaction's commit, so the conflict finds no
    stored key in it: the stored row is read once more, never answered as new or as an error."""
    import threading

    import psycopg
    from django.db import connections

    from webhooks.receiving import endpoint_cache_clear, webhook_event_receive

    endpoint_cache_clear()
    body = _stripe_body("evt_race")
    content_hash = scheme_get("stripe").content_hash(json.loads(body))
    other_id = uuid7()
    params = connections["default"].get_connection_params()
    dsn = {k: v for k, v in params.items() if k in ("host", "port", "user", "password", "dbname")}
    other = psycopg.connect(**dsn)  # a transaction of another web process, holding the key uncommitted
    other.execute(
        "INSERT INTO webhooks_eventkey (idempotency_key, event_id, content_hash, received_at) VALUES (%s, %s, %s, now())",
        ["stripe:evt_race", other_id, content_hash],
    )
    outcome = {}

    def receive():
        try:
            outcome["result"] = webhook_event_receive(slug="stripe", body=body, headers=signed_headers("stripe", stripe_secret, body))
        finally:
            connections.close_all()

    thread = threading.Thread(target=receive)
    thread.start()
    with psycopg.connect(**dsn, autocommit=True) as watcher:
        waiting = 0
        while not waiting and thread.is_alive():  # until the INSERT waits on the other transaction's key
            waiting = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%%webhooks_eventkey%%'"
            ).fetchone()[0]
    other.commit()
    other.close()
    thread.join()

    assert outcome["result"].created is False and outcome["result"].event_id == str(other_id)
