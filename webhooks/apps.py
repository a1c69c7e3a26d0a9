from django.apps import AppConfig
from django.apps import apps as global_apps
from django.db.models.signals import post_migrate

# Model permissions each group holds. Acting on dead letters is `change_deadletter` (the admin and
# API also require membership of `operators`); raw payloads need `view_raw_payload`, which no group
# gets by default: it is granted to named people.
GROUP_PERMISSIONS = {
    "operators": ["webhooks.view_webhookevent", "webhooks.view_deadletter", "webhooks.change_deadletter"],
    "support": ["webhooks.view_webhookevent", "audit.view_auditentry"],
    "services": [],
}


def group_permissions_grant(sender, using="default", apps=global_apps, **kwargs):
    """Create the groups and grant their webhook permissions; idempotent, runs after every migrate."""
    permissions_grant(GROUP_PERMISSIONS, using=using, apps=apps)


def permissions_grant(grants: dict[str, list[str]], *, using: str = "default", apps=global_apps) -> None:
    """Create each group in `grants` and give it its permissions (`"app_label.codename"`); idempotent.

    Permissions only exist once `post_migrate` has created them, so a data migration on a fresh
    database would find none; and a test flush deletes groups, which this puts back. Other apps'
    receivers (support/apps.py) grant their groups' permissions through it too.
    """
    from django.contrib.auth.management import create_permissions
    from django.contrib.contenttypes.management import create_contenttypes

    apps = apps or global_apps  # `flush` sends post_migrate without the migration state's apps
    try:
        Group = apps.get_model("auth", "Group")
        Permission = apps.get_model("auth", "Permission")
    except LookupError:
        return
    # Django's own handlers do this too, but may run after this one; both are idempotent.
    # Every app's, not only the sender's: the groups hold permissions of other apps (audit) too.
    for app_config in global_apps.get_app_configs():
        create_contenttypes(app_config, verbosity=0, using=using, apps=apps)
        create_permissions(app_config, verbosity=0, using=using, apps=apps)
    for name, codes in grants.items():
        group, _ = Group.objects.using(using).get_or_create(name=name)
        for code in codes:
            app_label, codename = code.split(".", 1)
            group.permissions.add(*Permission.objects.using(using).filter(content_type__app_label=app_label, codename=codename))


class WebhooksConfig(AppConfig):
    name = "webhooks"
    verbose_name = "Webhooks"

    def ready(self):
        # Registers the periodic task: Celery's autodiscovery only imports `<app>.tasks`.
        from webhooks import monitoring  # noqa: F401

        post_migrate.connect(group_permissions_grant, sender=self, dispatch_uid="webhooks.group_permissions_grant")
