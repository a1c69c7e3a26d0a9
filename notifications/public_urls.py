"""Pages reached from emails, outside the API: mounted at /notifications/ by config/urls.py."""

from anymail import urls as anymail_urls
from django.conf import settings
from django.urls import include, path

from notifications.views import notification_unsubscribe_page

urlpatterns = [
    path("unsubscribe/<str:token>/", notification_unsubscribe_page, name="notification-unsubscribe"),
]

# The mail provider's delivery events (e.g. /notifications/anymail/mailgun/tracking/), only with a
# webhook secret: unauthenticated events could mark e-mails sent or failed. Inbound mail is not taken.
if settings.ANYMAIL.get("WEBHOOK_SECRET"):
    tracking = [pattern for pattern in anymail_urls.urlpatterns if "tracking" in (pattern.name or "")]
    urlpatterns.append(path("anymail/", include((tracking, "anymail"))))
