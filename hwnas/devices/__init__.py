"""Devices, one registry: ``create_device("cpu-ort", threads=1)``, ``list_devices()``.

Names with a target after a colon (``adb:SERIAL``, ``ssh:user@host``) pass the
target to the factory. Heavy back ends import only when their device is made.
"""

from __future__ import annotations

from hwnas.devices.base import Device
from hwnas.devices.registry import DEVICES, create_device, list_devices

__all__ = ["DEVICES", "Device", "create_device", "list_devices"]
