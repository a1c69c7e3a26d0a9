"""`support` reads the customer lookup, entitlements, customers and notifications in the admin (view only).

Permissions are created by post_migrate, after this runs on a fresh database, so this creates those
of the apps it needs first (as Django's own handler would, idempotently). support/apps.py grants
the same after every migrate, because a test flush recreates the groups without them.
"""

from django.apps import apps as global_apps
from django.contrib.auth.management import create_permissions
from django.contrib.contenttypes.management import create_contenttypes
from django.db import migrations

PERMISSIONS = [
    ("support", "view_lookup"),
    ("fulfillment", "view_entitlement"),
    ("fulfillment", "view_customer"),
    ("notifications", "view_notification"),
]


def support_view_grant(apps, schema_editor):
    using = schema_editor.connection.alias
    for label in sorted({label for label, _ in PERMISSIONS}):
        app_config = global_apps.get_app_config(label)
        create_contenttypes(app_config, verbosity=0, using=using, apps=apps)
        create_permissions(app_config, verbosity=0, using=using, apps=apps)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.using(using).get_or_create(name="support")
    for label, codename in PERMISSIONS:
        group.permissions.add(*Permission.objects.using(using).filter(content_type__app_label=label, codename=codename))


def support_view_revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group = Group.objects.filter(name="support").first()
    if group is None:
        return
    for label, codename in PERMISSIONS:
        group.permissions.remove(*Permission.objects.filter(content_type__app_label=label, codename=codename))


class Migration(migrations.Migration):
    dependencies = [
        ("support", "0001_initial"),
        ("webhooks", "0002_groups"),
        ("fulfillment", "0001_initial"),
        ("notifications", "0003_notification_message_id"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(support_view_grant, support_view_revoke)]
