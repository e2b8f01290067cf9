"""The O&M domain: faults, work orders, SLA, dispatch, assets, KPIs, and its HTTP API."""
