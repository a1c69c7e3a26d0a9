"""The project's URLconf plus the public notification pages, for tests of unsubscribe links.

config/urls.py mounts notifications.public_urls at /notifications/ (a change requested from its
owner); until then this URLconf stands in for it. The duplicate mount is harmless once it lands.
"""

from django.urls import include, path

from config.urls import urlpatterns as project_urlpatterns

urlpatterns = [path("notifications/", include("notifications.public_urls")), *project_urlpatterns]
