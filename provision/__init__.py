"""dsas: netboot provisioning and image distribution for server farms."""

__version__ = "0.1.0"
