"""Pages reached from emails, outside the API: mounted at /notifications/ by config/urls.py."""

from django.urls import path

from notifications.views import notification_unsubscribe_page

urlpatterns = [
    path("unsubscribe/<str:token>/", notification_unsubscribe_page, name="notification-unsubscribe"),
]
