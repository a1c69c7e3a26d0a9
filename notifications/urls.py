from django.urls import path

from notifications.apis import NotificationListApi, NotificationPreferencesApi

urlpatterns = [
    path("notifications/", NotificationListApi.as_view(), name="notification-list"),
    path(
        "users/<int:user_id>/notification-preferences/",
        NotificationPreferencesApi.as_view(),
        name="notification-preferences",
    ),
]
