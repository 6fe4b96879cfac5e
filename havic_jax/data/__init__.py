"""Data on its way to the model: the prepared-record format, dataset sources, transforms, Grain
pipelines, preparation and the synthetic corpus."""
