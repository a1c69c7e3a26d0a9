class ReadOnlyAdminMixin:
    """An admin that shows rows and never writes them: records that only services may create."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
