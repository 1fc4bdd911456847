"""One module per model family, each binding ``FAMILY`` to its ``siri.models.family.ModelFamily``.
``siri.models.registry`` imports every module here: adding a family is adding a file."""
