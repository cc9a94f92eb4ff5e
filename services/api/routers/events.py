"""POST /events: live clicks into the clicks topic, through the replay's publisher."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, status

from services.api.deps import MetricsDep, SettingsDep, SinkDep
from services.api.errors import BrokerUnavailable
from services.api.routers.common import errors
from services.api.schemas import EventsAccepted, EventsBody

router = APIRouter(prefix="/events", tags=["events"])


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=EventsAccepted, responses=errors(503))
def post_events(
    body: Annotated[EventsBody, Body(description="One click event, or a list of them (at most 10,000).")],
    sink: SinkDep,
    metrics: MetricsDep,
    settings: SettingsDep,
) -> EventsAccepted:
    """Validate and publish click events (key = user_id); 202 once the broker acknowledged all of them.

    422 lists every invalid field of every event (nothing of the request is
    published then); 503 when the broker did not acknowledge in time.
    `event_id` is optional: send your own to make retries idempotent.
    """
    events = body if isinstance(body, list) else [body]
    try:
        accepted = sink.publish(events)
    except BrokerUnavailable:
        metrics.events_rejected.labels(reason="broker").inc()
        raise
    metrics.events_accepted.inc(accepted)
    return EventsAccepted(accepted=accepted, topic=settings.clicks_topic)
