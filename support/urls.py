from django.urls import path

from support.apis import CustomerLookupApi

urlpatterns = [
    path("customers/lookup/", CustomerLookupApi.as_view(), name="customer-lookup"),
]
