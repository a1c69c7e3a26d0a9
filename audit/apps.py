from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _chain_head_ensure(sender, using, **kwargs):
    from audit.services import audit_chain_head_ensure  # models are not loaded when ready() imports

    audit_chain_head_ensure(using=using)


class AuditConfig(AppConfig):
    name = "audit"

    def ready(self):
        post_migrate.connect(_chain_head_ensure, sender=self, dispatch_uid="audit_chain_head_ensure")
