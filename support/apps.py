from django.apps import AppConfig
from django.apps import apps as global_apps
from django.db.models.signals import post_migrate

from webhooks.apps import permissions_grant

# What `support` reads in the admin besides events and the audit log (webhooks/apps.py grants those):
# the lookup page, entitlements, customers (never their email) and notifications (never an address).
# View only: support changes nothing here. Also granted by migration 0002; this receiver puts them
# back after a test flush, which recreates the groups without them.
SUPPORT_VIEW_PERMISSIONS = [
    "support.view_lookup",
    "fulfillment.view_entitlement",
    "fulfillment.view_customer",
    "notifications.view_notification",
]


def support_permissions_grant(sender=None, using="default", apps=global_apps, **kwargs):
    """Grant `support` its view permissions; idempotent, runs after every migrate."""
    permissions_grant({"support": SUPPORT_VIEW_PERMISSIONS}, using=using, apps=apps)


class SupportConfig(AppConfig):
    name = "support"
    verbose_name = "Support"

    def ready(self):
        post_migrate.connect(support_permissions_grant, sender=self, dispatch_uid="support.support_permissions_grant")
