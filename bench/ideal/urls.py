from django.urls import path

from bench.ideal.views import ideal_receive
from config.health import healthz

urlpatterns = [
    path("ideal/<slug:slug>/", ideal_receive),
    path("healthz", healthz),
]
