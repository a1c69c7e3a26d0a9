from django.apps import AppConfig
from django.apps import apps as global_apps
from django.contrib.auth.management import create_permissions
from django.contrib.contenttypes.management import create_contenttypes
from django.db.models.signals import post_migrate

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
    apps = apps or global_apps  # `flush` sends post_migrate without the migration state's apps
    try:
        Group = apps.get_model("auth", "Group")
        Permission = apps.get_model("auth", "Permission")
    except LookupError:
        return
    # Permissions exist only once post_migrate created them; this may run before Django's handler.
    for label in {code.split(".", 1)[0] for code in SUPPORT_VIEW_PERMISSIONS}:
        app_config = global_apps.get_app_config(label)
        create_contenttypes(app_config, verbosity=0, using=using, apps=apps)
        create_permissions(app_config, verbosity=0, using=using, apps=apps)
    group, _ = Group.objects.using(using).get_or_create(name="support")
    for code in SUPPORT_VIEW_PERMISSIONS:
        app_label, codename = code.split(".", 1)
        group.permissions.add(*Permission.objects.using(using).filter(content_type__app_label=app_label, codename=codename))


class SupportConfig(AppConfig):
    name = "support"
    verbose_name = "Support"

    def ready(self):
        post_migrate.connect(support_permissions_grant, sender=self, dispatch_uid="support.support_permissions_grant")
