"""Dispatch: technicians and teams (:mod:`.people`), their load (:mod:`.load`), and the
auto-assignment choice (:mod:`.assign`, ranking rules in :mod:`.ranking`)."""
