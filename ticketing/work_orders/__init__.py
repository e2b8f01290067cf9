"""Work orders: state machine, timeline, fault intake, SLA clocks, dispatch, timers."""
