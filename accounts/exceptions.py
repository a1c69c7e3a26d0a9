from config.exceptions import ApplicationError


class UnknownUser(ApplicationError):
    code = "unknown_user"
    status_code = 404
