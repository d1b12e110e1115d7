"""The HDF5 feature store: the contract between stage one and stage two."""
