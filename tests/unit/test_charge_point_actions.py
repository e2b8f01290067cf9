"""Each version's list of charge-point-initiated actions names real actions of that version
and covers every action a handler is registered for."""

from __future__ import annotations

import pytest

from csms.session import OcppSession
from csms.v16.handlers import V16Session
from csms.v201.handlers import V201Session


@pytest.mark.parametrize("session_class", [V16Session, V201Session])
def test_charge_point_actions_are_actions_and_cover_the_handlers(
    session_class: type[OcppSession],
) -> None:
    actions = {str(a) for a in session_class.action_enum}
    assert session_class.charge_point_actions <= actions
    assert set(session_class.routes()) <= session_class.charge_point_actions
