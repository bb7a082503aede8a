"""The Montgomery County TB chest X-ray dataset, with lung masks (`montgomery_cxr`)."""

from txr_data.montgomery_cxr.montgomery_cxr_dataset_builder import Builder

__all__ = ["Builder"]
