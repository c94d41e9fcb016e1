"""execbroker: an IVOA ExecutionBroker for science platforms."""

__version__ = "0.1.0"
