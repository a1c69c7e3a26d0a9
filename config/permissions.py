"""Who may call what on the API: the contract's matrix ("HTTP API") in one place.

              events  entitlements  notifications  preferences GET  preferences PUT  audit  dead letters
  operators   read    read          read           read             -                -      read + act
  support     read    read          read           read             write (audited)  read   -
  services    -       read          -              -                -                -      -
  the user    -       -             own (?user=)   own              own              -      -
  superuser   everything

Anonymous requests get 401, everyone else outside the matrix 403. `services` accounts are tokens of
other programs, not people: they never count as "the user themself", even for their own id.
tests/config/test_permission_matrix.py checks every URL against this table.
"""

from rest_framework.permissions import SAFE_METHODS, BasePermission

OPERATORS = "operators"
SUPPORT = "support"
SERVICES = "services"


def in_groups(*groups: str, read_only: bool = False) -> type[BasePermission]:
    """A DRF permission that admits authenticated members of any of `groups` (and superusers);
    with `read_only`, for GET/HEAD/OPTIONS only."""

    class InGroups(BasePermission):
        message = f"requires membership of: {', '.join(groups)}"

        def has_permission(self, request, view):
            user = request.user
            if not user or not user.is_authenticated:
                return False
            if read_only and request.method not in SAFE_METHODS:
                return False
            return user.is_superuser or user.groups.filter(name__in=groups).exists()

    InGroups.__name__ = f"InGroups_{'_'.join(groups)}{'_read' if read_only else ''}"
    return InGroups


class IsUserThemself(BasePermission):
    """The authenticated person is the one the URL (`user_id`) or the `?user=` filter names.
    A `services` account is a program, not that person, whatever its id."""

    message = "only your own, unless you are in operators or support"

    def has_permission(self, request, view):
        user = request.user
        if not user or not user.is_authenticated:
            return False
        target = view.kwargs.get("user_id", request.query_params.get("user"))
        if target is None or str(target) != str(user.pk):
            return False
        return not user.groups.filter(name=SERVICES).exists()


# The API's root, schema and Swagger UI: for the people who use the API (and superusers). A `services`
# token reads entitlements only, so it does not get the map of every other route either.
ApiDocsReader = in_groups(OPERATORS, SUPPORT)
