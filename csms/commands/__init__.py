"""Execution of commands on live charger connections.

``executor`` serves the bus's command requests on this node (registered by
``csms.bootstrap``); ``translation`` holds what both versions share, ``v16`` and ``v201``
turn each command's parameters into the ``ocpp`` library's call payloads.
"""
