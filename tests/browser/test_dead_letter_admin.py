"""An operator triages dead letters in a real browser (Debian's Chromium), a support user is refused.

Screenshots go to a temporary folder; `PAYHOOK_REFRESH_SCREENSHOTS=1` writes them to docs/screenshots/,
which show operators what to expect.
"""

import pytest
from django.contrib.auth.models import Group, User
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.browser.conftest import PASSWORD, admin_log_in, screenshot_save
from tests.conftest import celery_queue
from tests.deadletters.factories import dead_letter_create
from webhooks import endpoints
from webhooks.models import DeadLetter

pytestmark = pytest.mark.integration


def _user(name: str, group: str) -> User:
    user = User.objects.create_user(username=name, password=PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    return user


def _listed_ids(browser) -> set[int]:
    return {int(box.get_attribute("value")) for box in browser.find_elements(By.NAME, "_selected_action")}


def _act(browser, row_id: int, action: str) -> None:
    browser.find_element(By.CSS_SELECTOR, f"input[name=_selected_action][value='{row_id}']").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value(action)
    browser.find_element(By.CSS_SELECTOR, "button[name=index]").click()


def test_operator_triages_dead_letters_and_support_is_refused(
    transactional_db, live_server, browser, broker_flushed, screenshots
):
    endpoint = endpoints.webhook_endpoint_create(slug="stripe", scheme="stripe", secret="whsec_browsertest0123456789")
    replay_me = dead_letter_create(endpoint=endpoint, error_type="UnknownPrice")
    discard_me = dead_letter_create(endpoint=endpoint, error_type="UnknownPrice")
    other = dead_letter_create(endpoint=endpoint, error_type="ValidationError",
                               task_name="notifications.tasks.notification_send")
    _user("olivia-operator", "operators")
    _user("sam-support", "support")

    admin_log_in(browser, live_server, "olivia-operator")
    assert browser.find_element(By.ID, "dlq-depth").text == "3"
    screenshot_save(browser, screenshots, "dead-letters-00-admin-index.png")
    browser.get(f"{live_server.url}/admin/webhooks/deadletter/")
    assert _listed_ids(browser) == {replay_me.id, discard_me.id, other.id}
    screenshot_save(browser, screenshots, "dead-letters-01-list.png")

    browser.find_element(By.CSS_SELECTOR, "#changelist-filter a[href*='error_type=UnknownPrice']").click()
    assert "error_type=UnknownPrice" in browser.current_url
    assert _listed_ids(browser) == {replay_me.id, discard_me.id}
    assert {cell.text.lower() for cell in browser.find_elements(By.CSS_SELECTOR, "#result_list td.field-status")} == {"open"}
    screenshot_save(browser, screenshots, "dead-letters-02-filtered.png")

    _act(browser, replay_me.id, "replay")
    assert "Replayed 1 dead letter(s)" in browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text
    assert "error_type=UnknownPrice" in browser.current_url  # back on the filtered list

    _act(browser, discard_me.id, "discard")
    note = browser.find_element(By.NAME, "note")
    note.send_keys("Test event sent from the provider dashboard; nothing to fulfil.")
    screenshot_save(browser, screenshots, "dead-letters-03-discard-note.png")
    browser.find_element(By.CSS_SELECTOR, "input[name=apply]").click()
    assert "Discarded 1 dead letter(s)" in browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text
    assert {cell.text.lower() for cell in browser.find_elements(By.CSS_SELECTOR, "#result_list td.field-status")} == {
        "replayed", "discarded"
    }
    screenshot_save(browser, screenshots, "dead-letters-04-result.png")

    statuses = dict(DeadLetter.objects.values_list("id", "status"))
    assert statuses == {replay_me.id: "replayed", discard_me.id: "discarded", other.id: "open"}
    discarded = DeadLetter.objects.get(id=discard_me.id)
    assert discarded.note == "Test event sent from the provider dashboard; nothing to fulfil."
    assert discarded.acted_by.username == "olivia-operator"
    assert broker_flushed.llen(celery_queue()) == 1  # the replay reached the broker, once

    admin_log_in(browser, live_server, "sam-support")
    assert "Dead letters" not in browser.find_element(By.ID, "content-main").text
    assert "Webhook events" in browser.find_element(By.ID, "content-main").text
    assert not browser.find_elements(By.ID, "dead-letter-stats")
    screenshot_save(browser, screenshots, "dead-letters-05-support-index.png")
    browser.get(f"{live_server.url}/admin/webhooks/deadletter/")
    assert "403 Forbidden" in browser.page_source
    screenshot_save(browser, screenshots, "dead-letters-06-support-refused.png")
    browser.get(f"{live_server.url}/admin/webhooks/deadletter/{other.id}/change/")
    assert "403 Forbidden" in browser.page_source
