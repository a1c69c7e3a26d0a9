"""The canonical schemas are a registry with teeth: a published version never changes.

A breaking change is a new file, `payhook.<domain>.<fact>.v<N+1>.json`, published here with its
digest; the old version stays as it was for every consumer still reading it. The digest is over the
schema's JSON (sorted keys, no whitespace), so reformatting a file is not a change; any edit of a
keyword, a property or a description is.
"""

import hashlib
import json
import re

import pytest
from jsonschema import Draft202012Validator

from canonical.envelope import SCHEMA_BASE_URL, SCHEMA_DIR, known_types

PUBLISHED = {
    "payhook.dispute.opened.v1": "2c70c52c82956c790fe89ad241ae5ee98aee1ae2591753ba2c115b76c5ceb978",
    "payhook.payment.failed.v1": "66ad8456089f6e55504213780c581ae4e8cf3e8678ad7c93b4fb5f3b4fb1f28b",
    "payhook.payment.refunded.v1": "fc036a1d9c675303a6d5846c78815729f30d663767ca7bd322c830e824cfbe6c",
    "payhook.payment.succeeded.v1": "867ddff8f35d235d8c15404775c22c3d63e98abe0ddf482f506f997c15b1959c",
    "payhook.subscription.activated.v1": "a79e8fbffe0ca49d846a9bcff68e7bc4d39480f27022a4c50b873a55284e1f13",
    "payhook.subscription.canceled.v1": "dc4534eb739426565bc3f6614a6e67a57951bf4dd2afb38597820285dc61ff4d",
}
TYPE_NAME = re.compile(r"^payhook\.[a-z]+\.[a-z_]+\.v[1-9][0-9]*$")


def _schema(event_type: str) -> dict:
    return json.loads((SCHEMA_DIR / f"{event_type}.json").read_text())


def _digest(schema: dict) -> str:
    return hashlib.sha256(json.dumps(schema, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@pytest.mark.parametrize("event_type", sorted(PUBLISHED))
def test_a_published_schema_never_changes(event_type):
    assert (SCHEMA_DIR / f"{event_type}.json").is_file(), f"{event_type} was published: it may not be removed"
    assert _digest(_schema(event_type)) == PUBLISHED[event_type], (
        f"{event_type} was published and changed: publish the change as a new version instead"
    )


def test_every_schema_in_the_repository_is_published():
    assert set(known_types()) == set(PUBLISHED), "publish a new version by adding its digest to PUBLISHED"


@pytest.mark.parametrize("event_type", sorted(PUBLISHED))
def test_each_schema_is_a_closed_draft_2020_12_schema_named_after_its_type(event_type):
    schema = _schema(event_type)
    Draft202012Validator.check_schema(schema)
    assert TYPE_NAME.match(event_type)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"{SCHEMA_BASE_URL}{event_type}.json"
    assert schema["title"] == event_type
    assert schema["additionalProperties"] is False


def test_the_digest_sees_an_edit_and_ignores_formatting():
    schema = _schema("payhook.payment.succeeded.v1")
    reformatted = json.loads(json.dumps(schema, indent=4))
    edited = {**schema, "required": [*schema["required"], "refund_reason"]}
    assert _digest(reformatted) == _digest(schema)
    assert _digest(edited) != _digest(schema)
