"""vegtts: test-time strategies for verifiable execution-grounded code generation."""

__version__ = "0.1.0"
