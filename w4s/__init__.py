"""w4s: Weak-for-Strong workflow optimization. The domain core; imports no Prefect."""

__version__ = "0.1.0"
