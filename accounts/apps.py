from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Who calls the API and the admin: hashed API tokens, API throttles, admin login lockout."""

    name = "accounts"

    def ready(self):
        from accounts import schema  # noqa: F401  registers the token's OpenAPI security scheme
