"""OCPP 2.0.1: the messages a charging station sends to the CSMS."""
