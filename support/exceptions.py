from config.exceptions import ApplicationError


class InvalidLookupQuery(ApplicationError):
    code = "invalid_query"
