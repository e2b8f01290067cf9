"""The state machine's legal moves when an order has no remote fix to run."""

from __future__ import annotations

from ticketing.work_orders.states import legal_targets


def test_remote_fix_is_legal_only_with_a_remote_fix_to_run() -> None:
    assert "remote_fix" in legal_targets("new")
    assert "remote_fix" not in legal_targets("new", remote_fix=False)
    assert legal_targets("dispatched", remote_fix=False) == legal_targets("dispatched")


def test_held_during_a_remote_fix_that_can_no_longer_run_goes_back_to_the_queue() -> None:
    assert legal_targets("on_hold", "remote_fix")[0] == "remote_fix"
    assert legal_targets("on_hold", "remote_fix", remote_fix=False) == (
        "new",
        "resolved",
        "closed",
        "cancelled",
    )
    assert legal_targets("on_hold", "accepted", remote_fix=False)[0] == "accepted"
