from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from notifications.exceptions import InvalidUnsubscribeToken
from notifications.models import Category
from notifications.services import notification_unsubscribe, notification_unsubscribe_token_read

TEMPLATE = "notifications/unsubscribe.html"


# CSRF-exempt because the signed token is the authentication, and RFC 8058 one-click unsubscribe
# is a cross-site POST from the mail provider. GET only shows a button: link scanners and
# prefetchers follow GETs, so a GET must never change anything.
@csrf_exempt
@never_cache
@require_http_methods(["GET", "POST"])
def notification_unsubscribe_page(request, token: str):
    try:
        if request.method == "POST":
            category = notification_unsubscribe(token=token)
            state = "done"
        else:
            _, category = notification_unsubscribe_token_read(token=token)
            state = "confirm"
    except InvalidUnsubscribeToken:
        return render(request, TEMPLATE, {"state": "invalid"}, status=400)
    return render(request, TEMPLATE, {"state": state, "category_label": Category(category).label.lower()})
