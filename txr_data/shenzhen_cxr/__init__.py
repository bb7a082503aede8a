"""The Shenzhen TB chest X-ray dataset (`shenzhen_cxr`)."""

from txr_data.shenzhen_cxr.shenzhen_cxr_dataset_builder import Builder

__all__ = ["Builder"]
