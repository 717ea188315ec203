"""videoattn: video action recognition with I3D, non-local blocks and CBAM."""

__version__ = "0.1.0"
