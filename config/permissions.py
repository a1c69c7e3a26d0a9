from rest_framework.permissions import BasePermission

OPERATORS = "operators"
SUPPORT = "support"
SERVICES = "services"


def in_groups(*groups: str) -> type[BasePermission]:
    """A DRF permission that admits authenticated members of any of `groups` (and superusers)."""

    class InGroups(BasePermission):
        message = f"requires membership of: {', '.join(groups)}"

        def has_permission(self, request, view):
            user = request.user
            if not user or not user.is_authenticated:
                return False
            return user.is_superuser or user.groups.filter(name__in=groups).exists()

    InGroups.__name__ = f"InGroups_{'_'.join(groups)}"
    return InGroups
