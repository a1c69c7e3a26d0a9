from django.db import models


class Lookup(models.Model):
    """No table: the admin's "Customer lookup" page hangs here, with its `view_lookup` permission.

    The page reads other apps' rows (support/selectors.py); an unmanaged model is how a custom
    admin page gets an entry in the admin index and a permission a group can hold.
    """

    class Meta:
        managed = False
        default_permissions = ("view",)
        verbose_name = "customer lookup"
        verbose_name_plural = "customer lookup"
