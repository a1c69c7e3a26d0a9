import hashlib
import hmac

import pytest

from audit.exceptions import UnknownSubjectKind
from config.blind_index import blind_index, blind_index_candidates


def test_it_is_an_hmac_sha256_under_the_blind_index_key(settings):
    settings.BLIND_INDEX_KEY = "k1"
    expected = hmac.new(b"k1", b"email\x00alice@example.com", hashlib.sha256).hexdigest()
    assert blind_index("alice@example.com", kind="email") == expected


def test_emails_are_normalised_by_strip_and_lower_and_ids_keep_their_case():
    assert blind_index("  ALICE@Example.COM\n", kind="email") == blind_index("alice@example.com", kind="email")
    assert blind_index("cus_ABC", kind="customer") != blind_index("cus_abc", kind="customer")
    assert blind_index(" cus_ABC ", kind="customer") == blind_index("cus_ABC", kind="customer")


def test_kinds_are_separate_domains_and_unknown_kinds_are_refused():
    assert blind_index("42", kind="user") != blind_index("42", kind="customer")
    with pytest.raises(UnknownSubjectKind):
        blind_index("42", kind="favourite_colour")


def test_a_new_key_changes_every_hash_and_previous_keys_stay_searchable(settings):
    settings.BLIND_INDEX_KEY = "old"
    old_hash = blind_index("alice@example.com", kind="email")
    settings.BLIND_INDEX_KEY = "new"
    assert blind_index("alice@example.com", kind="email") != old_hash
    assert old_hash not in blind_index_candidates("alice@example.com")
    settings.BLIND_INDEX_PREVIOUS_KEYS = ["old"]
    assert old_hash in blind_index_candidates("alice@example.com")
