from django.urls import path

from audit.apis import AuditEntryListApi

urlpatterns = [
    path("audit/", AuditEntryListApi.as_view(), name="audit-list"),
]
