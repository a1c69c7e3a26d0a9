from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from accounts.exceptions import UnknownUser
from accounts.models import ApiToken
from accounts.tokens import PREFIX_LENGTH, token_key_digest, token_key_generate


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    key: str  # the only time the key exists outside the caller's hands


@transaction.atomic
def api_token_create(*, user, expires_in: timedelta) -> IssuedToken:
    key = token_key_generate()
    now = timezone.now()
    token = ApiToken.objects.create(
        user=user, prefix=key[:PREFIX_LENGTH], digest=token_key_digest(key), created_at=now, expires_at=now + expires_in
    )
    return IssuedToken(token=token, key=key)


def api_token_create_for_username(*, username: str, expires_in: timedelta) -> IssuedToken:
    user = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: username}).first()
    if user is None:
        raise UnknownUser(f"no user named {username!r}")
    return api_token_create(user=user, expires_in=expires_in)


def api_token_touch(*, token: ApiToken, now) -> None:
    """Records use at most once a minute: a write per API request would be a write per read."""
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
