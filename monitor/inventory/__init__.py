"""The ISP's network as data: municipalities, sites, nodes, customers and their endpoints."""

from monitor.inventory.model import (
    Customer,
    Inventory,
    Municipality,
    PollingSettings,
    ServiceClass,
    Site,
    SnmpCredentials,
    SnmpSettings,
    Target,
    Thresholds,
)
from monitor.secret import Secret

__all__ = [
    "Customer",
    "Inventory",
    "Municipality",
    "PollingSettings",
    "Secret",
    "ServiceClass",
    "Site",
    "SnmpCredentials",
    "SnmpSettings",
    "Target",
    "Thresholds",
]
