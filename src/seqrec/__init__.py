"""seqrec: sequential recommendation in PyTorch."""
__version__ = "0.1.0"
