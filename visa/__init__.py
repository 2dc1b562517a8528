"""visa: remote data-analysis machines in the browser for facility users."""

__version__ = "0.1.0"
