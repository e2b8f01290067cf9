"""SLA: calendars (which seconds count), clocks (pure transitions of one target of a work
order) and policies (targets per priority and contract type, their store and defaults).

The work-order engine decides when clocks start, pause, resume and stop, and the scanner
when they warn or breach; this package holds the math they call and the policy store.
"""
