from django.urls import path

from fulfillment.apis import EntitlementListApi

urlpatterns = [
    path("entitlements/", EntitlementListApi.as_view(), name="entitlement-list"),
]
