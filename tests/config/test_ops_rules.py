"""docs/ops/prometheus-rules.yml and docs/ops/grafana-dashboard.json: well-formed, and every metric
they name is one /metrics serves once events went through (histograms as _bucket/_sum/_count)."""

import json
import re
import time

import pytest
import yaml
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

from fulfillment.services import catalog_import
from providers.stripe import samples
from tests.fulfillment.conftest import CATALOG
from webhooks import tasks
from webhooks.models import WebhookEvent

RULES = settings.BASE_DIR / "docs/ops/prometheus-rules.yml"
DASHBOARD = settings.BASE_DIR / "docs/ops/grafana-dashboard.json"
METRIC_NAME = re.compile(r"\bpayhook_[a-z0-9_]+\b")
# The contract's metrics ("Operations"): each one the dashboard must show.
CONTRACT = {
    "payhook_webhook_events_total", "payhook_webhook_refused_total", "payhook_event_processing_seconds",
    "payhook_payment_to_entitlement_seconds", "payhook_events_backlog", "payhook_oldest_unprocessed_event_age_seconds",
    "payhook_dead_letters_open", "payhook_task_retries_total", "payhook_replays_total",
}
ALERTED = {"PayhookDeadLettersOpen", "PayhookBacklogStale", "PayhookRefusalSpike", "PayhookPaidButNotProvisioned",
           "PayhookPaymentToEntitlementP95AboveSlo"}


def _rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    assert groups and all(group["name"] and group["rules"] for group in groups)
    return [rule for group in groups for rule in group["rules"]]


def _dashboard_panels() -> list[dict]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [panel for panel in panels if panel["type"] != "row"]


def _expressions() -> list[str]:
    return [rule["expr"] for rule in _rules()] + [t["expr"] for p in _dashboard_panels() for t in p["targets"]]


def _base(name: str) -> str:
    return re.sub(r"_(bucket|sum|count)$", "", name)


def test_every_alert_rule_is_complete():
    rules = _rules()

    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)) and ALERTED <= set(names)
    for rule in rules:
        assert set(rule) >= {"alert", "expr", "for", "labels", "annotations"}, rule.get("alert")
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"page", "warning"} and rule["labels"]["service"] == "payhook"
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert rule["annotations"]["runbook"].startswith("docs/operations.md#")
        assert METRIC_NAME.search(rule["expr"]), rule["alert"]


def test_the_slo_rules_watch_the_p95_against_the_slo_and_unprovisioned_payments():
    by_name = {rule["alert"]: rule["expr"] for rule in _rules()}

    p95 = by_name["PayhookPaymentToEntitlementP95AboveSlo"]
    assert "histogram_quantile(0.95" in p95 and "payhook_payment_to_entitlement_seconds_bucket" in p95
    assert "payhook_provisioning_slo_seconds" in p95
    assert "payhook_unprovisioned_payments" in by_name["PayhookPaidButNotProvisioned"]


def test_every_dashboard_panel_has_targets_and_every_contract_metric_has_a_panel():
    dashboard = json.loads(DASHBOARD.read_text())
    panels = _dashboard_panels()

    assert dashboard["title"] and dashboard["uid"] and dashboard["schemaVersion"] >= 30
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["title"] and panel["gridPos"]["w"] > 0 and panel["gridPos"]["h"] > 0
        assert panel["targets"], panel["title"]
        assert all(target["expr"].strip() and target["refId"] for target in panel["targets"]), panel["title"]
    shown = {_base(name) for panel in panels for target in panel["targets"] for name in METRIC_NAME.findall(target["expr"])}
    assert CONTRACT <= shown, CONTRACT - shown


@pytest.mark.django_db
def test_every_metric_the_rules_and_the_dashboard_name_is_served_by_metrics(
    client, stripe_endpoint, post_stripe, django_capture_on_commit_callbacks
):
    catalog_import(data=CATALOG)
    payment = samples.stripe_trigger_event("checkout.session.completed")
    payment["created"] = int(time.time()) - 20
    payment["data"]["object"]["metadata"] = {"price_id": "price_pro"}
    accepted = [post_stripe(event).json()["event_id"] for event in (payment, samples.stripe_event("customer.created"))]
    assert post_stripe(payment).json()["status"] == "duplicate"
    assert post_stripe(samples.stripe_event("invoice.paid"), secret="whsec_wrong").status_code == 400
    with django_capture_on_commit_callbacks(execute=True):
        tasks.webhook_events_process(accepted)
    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {"processed", "ignored"}

    response = client.get("/metrics")

    served = {sample.name for family in text_string_to_metric_families(response.content.decode()) for sample in family.samples}
    named = {name for expr in _expressions() for name in METRIC_NAME.findall(expr)}
    assert named and named <= served, sorted(named - served)
