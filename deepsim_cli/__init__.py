"""deepsim: invert and visualize what CNN layers encode (DeePSiM, DGN-AM)."""

__version__ = "0.1.0"
