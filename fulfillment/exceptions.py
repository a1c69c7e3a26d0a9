from config.exceptions import ApplicationError


class FulfillmentError(ApplicationError):
    """A permanent failure to fulfil an event: retrying cannot help; it becomes a dead letter."""


class PriceNotFound(FulfillmentError):
    code = "price_not_found"


class PriceNotInCatalog(FulfillmentError):
    code = "price_not_in_catalog"


class CatalogInvalid(FulfillmentError):
    code = "catalog_invalid"
