from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import APIRootView, DefaultRouter

from config.health import healthz, metrics, readyz
from config.permissions import ApiDocsReader
from webhooks.apis import DeadLetterViewSet, EventViewSet


class ApiRootView(APIRootView):
    """/api/v1/ lists the API's routes: for its groups, like the schema."""

    permission_classes = [ApiDocsReader]


router = DefaultRouter(trailing_slash=True)
router.APIRootView = ApiRootView
router.register("events", EventViewSet, basename="event")
router.register("dead-letters", DeadLetterViewSet, basename="dead-letter")

urlpatterns = [
    path("webhooks/", include("webhooks.urls")),
    path("api/v1/", include(router.urls)),
    path("api/v1/", include("fulfillment.urls")),
    path("api/v1/", include("notifications.urls")),
    path("api/v1/", include("audit.urls")),
    path("api/v1/", include("support.urls")),
    path("notifications/", include("notifications.public_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # Both for the API's groups only (SPECTACULAR_SETTINGS["SERVE_PERMISSIONS"]).
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
]

# JSON on /webhooks/ and /api/, Django's pages elsewhere (config/errors.py).
handler400 = "config.errors.bad_request"
handler403 = "config.errors.permission_denied"
handler404 = "config.errors.page_not_found"
handler500 = "config.errors.server_error"
