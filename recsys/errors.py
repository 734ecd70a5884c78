"""Errors a user can cause: the CLI prints them as one line and exits with status 2."""


class UserError(Exception):
    """A problem with the user's input (a file, a flag, a value) that the user can fix.

    The message must say what is wrong, where (file, row, id) and what to do about it.
    """


class ColdStartNotSupported(UserError):
    """Raised by a model that cannot score users it was not trained on (no fold-in from references)."""


class UnknownId(UserError):
    """An external user or image id that the dataset does not hold."""


class DataNotSupported(UserError):
    """Raised by a model fitted on data of a kind it does not learn from (``Model.learns_from``): e.g. a model of
    ratings on pairwise choices."""


class NewImagesNotSupported(UserError):
    """Raised by a model that cannot score images it was not fitted with (``Model.with_new_images``): its image
    side is per image id (the oracle, item_knn on co-raters), with no map from image features or metadata."""
