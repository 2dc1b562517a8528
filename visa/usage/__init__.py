"""Usage over time: samples of instances, sessions and resources in use, per cloud and flavour."""
