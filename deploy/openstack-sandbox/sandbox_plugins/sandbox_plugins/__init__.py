"""Plugins the visa OpenStack sandbox loads into Nova and Neutron (none runs in visa itself)."""
