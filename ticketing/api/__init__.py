"""HTTP routers owned by ticketing."""

from fastapi import APIRouter

from ticketing.api import (
    fault_rules,
    faults,
    remediation,
    sites,
    sla_policies,
    teams,
    technicians,
    webhooks,
    work_orders,
)


def router() -> APIRouter:
    api = APIRouter(prefix="/api/v1")
    for module in (
        work_orders,
        faults,
        fault_rules,
        sla_policies,
        technicians,
        teams,
        sites,
        webhooks,
        remediation,
    ):
        api.include_router(module.router)
    return api
