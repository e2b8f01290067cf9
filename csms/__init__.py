"""The OCPP edge: WebSocket server, charger identity, sessions, per-version handlers."""
