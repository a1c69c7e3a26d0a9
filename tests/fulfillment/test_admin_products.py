"""The catalog decides what a payment grants: every create, edit and delete is audited."""

import json

import pytest
from django.core.management import call_command

from fulfillment.exceptions import CatalogInvalid
from fulfillment.models import Product
from fulfillment.services import catalog_import, product_create, product_delete, product_update
from tests.fulfillment.admin_support import audit_entries, superuser_create

CHANGELIST = "/admin/fulfillment/product/"
pytestmark = pytest.mark.django_db


@pytest.fixture
def root(client):
    user = superuser_create()
    client.force_login(user)
    return user


def _product(price_id="price_pro", keys=("pro",)) -> Product:
    return Product.objects.create(provider="stripe", price_id=price_id, entitlements=list(keys))


class TestAdmin:
    def test_adding_a_product_is_audited_once(self, client, root):
        assert 'name="note"' in client.get(f"{CHANGELIST}add/").content.decode()
        response = client.post(f"{CHANGELIST}add/", {
            "provider": "stripe", "price_id": "price_new", "name": "New", "entitlements": '["pro", "reports"]', "note": "launch",
        })

        assert response.status_code == 302, response.content[:2000]
        product = Product.objects.get(price_id="price_new")
        assert product.entitlements == ["pro", "reports"]
        [entry] = audit_entries()
        assert (entry.action, entry.actor) == ("product.created", str(root.pk))
        assert entry.data == {
            "product_id": product.pk, "provider": "stripe", "price_id": "price_new", "entitlements_before": None,
            "entitlements_after": ["pro", "reports"], "source": "admin", "note": "launch",
        }

    def test_editing_the_entitlements_records_before_and_after(self, client, root):
        product = _product()
        page = client.get(f"{CHANGELIST}{product.pk}/change/").content.decode()
        assert 'name="entitlements"' in page and 'name="price_id"' not in page

        response = client.post(f"{CHANGELIST}{product.pk}/change/", {"name": "", "entitlements": '["pro", "export"]', "note": ""})

        assert response.status_code == 302, response.content[:2000]
        product.refresh_from_db()
        assert product.entitlements == ["export", "pro"]
        [entry] = audit_entries()
        assert (entry.action, entry.actor) == ("product.changed", str(root.pk))
        assert (entry.data["entitlements_before"], entry.data["entitlements_after"]) == (["pro"], ["export", "pro"])
        assert entry.data["fields"] == ["entitlements"] and "note" not in entry.data

    def test_the_price_id_cannot_be_changed_in_the_form(self, client, root):
        product = _product()

        response = client.post(f"{CHANGELIST}{product.pk}/change/", {"price_id": "price_other", "provider": "paddle",
                                                                       "name": "", "entitlements": '["pro"]'})

        assert response.status_code == 302
        product.refresh_from_db()
        assert (product.provider, product.price_id) == ("stripe", "price_pro")
        assert audit_entries() == []  # nothing else changed

    def test_a_bad_entitlement_list_is_refused(self, client, root):
        product = _product()
        response = client.post(f"{CHANGELIST}{product.pk}/change/", {"name": "", "entitlements": '[""]'})
        assert response.status_code == 200
        product.refresh_from_db()
        assert product.entitlements == ["pro"] and audit_entries() == []

    def test_deleting_one_and_deleting_selected_are_audited_per_product(self, client, root):
        one, two, three = _product("price_1"), _product("price_2"), _product("price_3")

        assert client.post(f"{CHANGELIST}{one.pk}/delete/", {"post": "yes"}).status_code == 302
        client.post(CHANGELIST, {"action": "delete_selected", "_selected_action": [two.pk, three.pk], "post": "yes"})

        assert not Product.objects.exists()
        entries = audit_entries()
        assert [(e.action, e.actor, e.data["price_id"]) for e in entries] == [
            ("product.deleted", str(root.pk), "price_1"), ("product.deleted", str(root.pk), "price_2"),
            ("product.deleted", str(root.pk), "price_3"),
        ]
        assert entries[0].data["entitlements_before"] == ["pro"] and entries[0].data["entitlements_after"] is None


class TestServices:
    def test_create_refuses_a_price_already_in_the_catalog(self):
        _product()
        with pytest.raises(CatalogInvalid):
            product_create(provider="stripe", price_id="price_pro", entitlements=["x"], actor="system", source="test")
        assert audit_entries() == []

    def test_update_without_a_change_writes_nothing(self):
        product = _product()
        assert product_update(product=product, entitlements=["pro"], actor="4", source="admin") is False
        assert audit_entries() == []

    def test_delete_records_the_keys_it_took_away(self):
        product = _product(keys=("pro", "reports"))
        product_delete(product=product, actor="4", source="admin", note="price archived")
        [entry] = audit_entries()
        assert (entry.action, entry.data["entitlements_before"], entry.data["note"]) == (
            "product.deleted", ["pro", "reports"], "price archived",
        )


class TestImportCatalog:
    def test_the_import_audits_each_created_or_changed_product_as_the_system(self, tmp_path):
        _product("price_same", ("a",))
        _product("price_changed", ("old",))
        catalog = {"products": [
            {"price_id": "price_same", "entitlements": ["a"]},
            {"price_id": "price_changed", "entitlements": ["new"]},
            {"price_id": "price_added", "entitlements": ["added"]},
        ]}
        path = tmp_path / "catalog.json"
        path.write_text(json.dumps(catalog))

        call_command("import_catalog", str(path))

        entries = audit_entries()
        assert [(e.action, e.actor, e.data["price_id"], e.data["source"]) for e in entries] == [
            ("product.changed", "system", "price_changed", "import_catalog"),
            ("product.created", "system", "price_added", "import_catalog"),
        ]
        assert (entries[0].data["entitlements_before"], entries[0].data["entitlements_after"]) == (["old"], ["new"])

        catalog_import(data=catalog)
        assert len(audit_entries()) == 2  # running it again changes nothing
