"""Data: the Dataset a study trains on, the built-in sets, users' data files, the split and scaling."""
