"""`GET /fleet` (admin): workers, streams, task counts, throughput, garbage, dependencies down and
warnings (see `common.fleet`)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import Admin, Services
from api.errors import error_responses
from common.fleet import fleet_snapshot

router = APIRouter(tags=["fleet"], responses=error_responses(401, 403, 503))


class InFlightOut(BaseModel):
    task_id: str
    stage: str | None
    progress: float = Field(ge=0, le=1)


class OutageOut(BaseModel):
    since: float | None = Field(description="unix time the worker first saw it down")
    error: str


class DependencyDownOut(BaseModel):
    since: float | None = Field(description="unix time the first live worker saw it down")
    down_for_s: float | None
    workers: list[str]
    error: str = Field(description="the last error one of them saw")


class GarbageOut(BaseModel):
    count: int = Field(description="recorded garbage not yet confirmed removed (search never shows it)")
    oldest_age_s: float | None


class WorkerOut(BaseModel):
    consumer: str
    state: str = Field(description="alive | late | dead, by heartbeat age")
    heartbeat_age_s: float
    record_missing: bool = Field(description="the worker's JSON record expired (only its heartbeat score is left)")
    host: str | None
    pid: int | None
    version: str | None
    started_at: float | None
    uptime_s: float | None
    slots: int | None
    stopping: bool
    in_flight: list[InFlightOut]
    done: int
    failed: int
    cancelled: int
    retried: int
    embed_chunks_per_s: float | None
    queue_lag_s: float | None = Field(description="how long the worker's last task waited in the queue")
    dependencies_down: dict[str, OutageOut] = Field(default_factory=dict,
                                                    description="dependencies this worker is waiting for")


class StreamOut(BaseModel):
    name: str
    priority: str
    length: int
    pending: int = Field(description="delivered to a worker, not yet acked")
    lag: int = Field(description="never delivered to any worker")
    consumers: int
    oldest_pending_age_s: float | None
    oldest_queued_age_s: float | None


class DeadLetterOut(BaseModel):
    name: str
    length: int


class LivenessOut(BaseModel):
    heartbeat_interval_s: float
    late_after_s: float
    dead_after_s: float


class ThroughputOut(BaseModel):
    window_s: int
    bucket_s: int
    start: float = Field(description="unix time where the first bucket starts")
    done: list[int]
    failed: list[int]
    done_per_min: float
    failed_per_min: float
    truncated: bool


class WarningOut(BaseModel):
    code: str = Field(description="no_live_worker | dependency_down | dead_letter | garbage_backlog | worker_late | "
                                  "worker_dead")
    level: str = Field(description="critical | warning")
    message: str


class FleetOut(BaseModel):
    now: float = Field(description="Redis server time (unix seconds) the ages are measured against")
    liveness: LivenessOut
    workers: list[WorkerOut]
    worker_states: dict[str, int]
    streams: list[StreamOut]
    dead_letter: DeadLetterOut
    tasks: dict[str, int] = Field(description="number of tasks per status, all tenants")
    throughput: ThroughputOut
    garbage: GarbageOut
    dependencies: dict[str, DependencyDownOut] = Field(description="dependencies live workers report down")
    warnings: list[WarningOut]


@router.get("/fleet", response_model=FleetOut)
async def get_fleet(svc: Services, _: Admin) -> FleetOut:
    """Workers (alive / late / dead by heartbeat age), task streams, task counts, the last hour's
    throughput and operator warnings. Admin keys only."""
    return FleetOut.model_validate(await fleet_snapshot(svc.core))
