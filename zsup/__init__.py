"""zsup: a process supervisor driven over ZeroMQ, HTTP and websockets."""

__version__ = "0.1.0"
