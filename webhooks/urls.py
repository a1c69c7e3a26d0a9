from django.urls import path

from webhooks.views import webhook_receive

urlpatterns = [
    path("<slug:slug>/", webhook_receive, name="webhook-receive"),
    # Served, not redirected: a provider's POST cannot follow a redirect, and APPEND_SLASH raises on
    # a POST under DEBUG.
    path("<slug:slug>", webhook_receive, name="webhook-receive-unslashed"),
]
