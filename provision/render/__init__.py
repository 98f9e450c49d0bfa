"""Render: pure functions of (inventory, host) -> text, through jinja2 templates.

Templates ship in ``templates/`` and can be overridden file by file from a
directory (``--templates DIR`` or ``cluster.templates`` in the inventory), like
Warewulf overlays. Rendering is strict: an undefined variable is an error.
"""

from .engine import (
    BOOT_FILES,
    HOST_FILES,
    ImagePayload,
    RenderError,
    reload_templates,
    render_discovery_ipxe,
    render_host,
    render_keepalived,
    render_pxelinux_default,
    render_zone,
)

__all__ = [
    "BOOT_FILES",
    "HOST_FILES",
    "ImagePayload",
    "RenderError",
    "render_discovery_ipxe",
    "render_host",
    "render_keepalived",
    "render_pxelinux_default",
    "reload_templates",
    "render_zone",
]
