from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from accounts.models import ApiToken
from accounts.services import api_token_touch
from accounts.tokens import token_key_digest


class ApiTokenAuthentication(BaseAuthentication):
    """`Authorization: Token <key>`, as the contract names it, checked against stored digests.
    An unknown, expired or malformed key is a 401 that never says which of the three it was."""

    keyword = "Token"

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("invalid token header")
        try:
            key = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("invalid token header") from None
        token = ApiToken.objects.select_related("user").filter(digest=token_key_digest(key)).first()
        now = timezone.now()
        if token is None or token.expires_at <= now or not token.user.is_active:
            raise exceptions.AuthenticationFailed("invalid or expired token")
        api_token_touch(token=token, now=now)
        return token.user, token

    def authenticate_header(self, request):
        return self.keyword
