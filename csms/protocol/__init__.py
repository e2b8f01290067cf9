"""OCPP-J framing, validation and key conversion: pure code, no socket."""
