"""OCPP 1.6J: Core, Firmware Management, Diagnostics and the Security extension."""
