"""safehold: consistent, encrypted, verified recovery points for self-hosted IT apps."""

__version__ = "0.1.0"
