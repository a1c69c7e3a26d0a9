"""API answers hold customer data: no browser, proxy or CDN may keep them (`Cache-Control: no-store`)."""

API_PREFIX = "/api/"


class ApiNoStoreMiddleware:
    """Outermost: every answer under /api/, errors and throttled ones included, is marked no-store."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.path.startswith(API_PREFIX):
            response["Cache-Control"] = "no-store"
            response["Pragma"] = "no-cache"
        return response
