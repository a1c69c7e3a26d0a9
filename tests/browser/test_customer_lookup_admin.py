"""Support looks a customer up in a real browser (Debian's Chromium) and opens an entitlement read-only.

Screenshots go to a temporary folder; `PAYHOOK_REFRESH_SCREENSHOTS=1` writes them to docs/screenshots/
(customer-lookup.png is the page support lives in).
"""

import time

import pytest
from django.contrib.auth.models import Group, User
from selenium.webdriver.common.by import By

from fulfillment.models import Entitlement
from notifications.models import NotificationPreference
from tests.browser.conftest import PASSWORD, admin_log_in, screenshot_save
from tests.customer_support.conftest import BUYER_EMAIL, BUYER_USERNAME, buyer, story  # noqa: F401
from tests.fulfillment.conftest import catalog, deliver  # noqa: F401
from webhooks.models import DeadLetter

pytestmark = pytest.mark.integration

T = int(time.time()) - 900  # provider times a quarter of an hour before delivery


def test_support_looks_up_a_customer_and_views_an_entitlement_read_only(
    transactional_db, live_server, browser, screenshots, story, buyer  # noqa: F811
):
    # The buyer turned receipts by e-mail off before the second purchase: that one shows as suppressed.
    NotificationPreference.objects.create(user=buyer, category="access", channel="email", enabled=False)
    ids = story(T)
    DeadLetter.objects.create(
        unit_key=f"notifications.tasks.notification_send:{ids['addon']}", task_name="notifications.tasks.notification_send",
        event_id=ids["addon"], error_type="SMTPServerDisconnected", status=DeadLetter.Status.RESOLVED, attempts=5,
    )
    support = User.objects.create_user(username="sam-support", password=PASSWORD, is_staff=True)
    support.groups.add(Group.objects.get(name="support"))

    admin_log_in(browser, live_server, "sam-support")
    browser.find_element(By.CSS_SELECTOR, "#content-main a[href='/admin/support/lookup/']").click()
    box = browser.find_element(By.ID, "lookup-q")
    box.send_keys(BUYER_EMAIL)
    box.submit()

    timeline = browser.find_element(By.ID, "lookup-timeline")
    kinds = [row.get_attribute("class") for row in timeline.find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert {"kind-event", "kind-entitlement", "kind-notification", "kind-dead_letter", "kind-refund", "kind-audit"} <= set(kinds)
    assert browser.find_element(By.ID, "active-entitlements").text.startswith("1")
    assert "suppressed" in timeline.text and "refunded" in timeline.text
    page = browser.find_element(By.ID, "content").text
    assert BUYER_EMAIL not in page and BUYER_USERNAME not in page  # the term only in the search box
    assert browser.find_element(By.ID, "lookup-q").get_attribute("value") == BUYER_EMAIL
    browser.set_window_size(1440, 1500)
    screenshot_save(browser, screenshots, "customer-lookup.png")
    browser.find_element(By.CSS_SELECTOR, "#lookup-kinds a[href*='kind=access']").click()
    kinds = {row.get_attribute("class") for row in browser.find_elements(By.CSS_SELECTOR, "#lookup-timeline tbody tr")}
    assert kinds == {"kind-entitlement", "kind-refund"}
    screenshot_save(browser, screenshots, "customer-lookup-access.png")
    browser.set_window_size(1400, 1000)

    entitlement = Entitlement.objects.get(key="addon")
    browser.find_element(By.CSS_SELECTOR, f"#lookup-entitlements a[href='/admin/fulfillment/entitlement/{entitlement.pk}/change/']").click()
    assert "View entitlement" in browser.find_element(By.ID, "content").text
    assert not browser.find_elements(By.NAME, "_save")
    assert BUYER_EMAIL not in browser.page_source and BUYER_USERNAME not in browser.page_source
    screenshot_save(browser, screenshots, "customer-lookup-entitlement.png")
