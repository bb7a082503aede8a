"""A screening programme's own chest X-rays (`local_cxr`), from its manual dir."""

from txr_data.local_cxr.local_cxr_dataset_builder import Builder

__all__ = ["Builder"]
