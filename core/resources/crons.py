"""Crons: schedules that create runs (contract §9), and the scheduler that fires them.

A cron keeps ``payload``: its create body, with the assistant id resolved and
``config.configurable.cron_id`` injected. The payload must be a run creation that would
succeed, so it goes through the same checks as ``POST /runs`` at create and at every patch:
a bad payload is a 422 when it is given, not a silent failure when the cron fires.

The scheduler (:meth:`CronService.serve`) polls ``storage.crons.due`` every
``settings.cron_interval`` seconds and fires each due cron through ``core.runs.create``,
exactly as ``POST /runs`` (a new thread per firing) or ``POST /threads/{id}/runs`` would,
acting as the user who created the cron (authorized as them, the run carries them), then
advances ``next_run_date``. Everything lives in storage; the service keeps no state.
"""

from __future__ import annotations

import datetime as dt
import logging
import zoneinfo
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import attrs
import trio
from croniter import CroniterError, croniter

from triograph.core.infra import encoding
from triograph.core.infra.auth import Filters, User, acting_as, current_user, scoped
from triograph.core.infra.errors import BadRequest, InvalidRequest, NotFound, TriographError
from triograph.core.infra.models import (
    JSON,
    MAX_OFFSET,
    Cron,
    OnCompletion,
    RunCreate,
    bounded,
    check_page,
    check_select,
    new_id,
    now,
    selected,
    selecting,
    structure,
    to_wire,
    validate_uuid,
)
from triograph.core.resources.threads import strip_reserved

if TYPE_CHECKING:
    from triograph.core.infra.context import Core
    from triograph.core.infra.models import Assistant

log = logging.getLogger("triograph.crons")

CRON_FIELDS = (
    "cron_id",
    "assistant_id",
    "thread_id",
    "on_run_completed",
    "end_time",
    "schedule",
    "timezone",
    "created_at",
    "updated_at",
    "user_id",
    "payload",
    "next_run_date",
    "metadata",
    "enabled",
)
#: run fields a PATCH may change in the payload (besides those of ``CronPatch``)
PATCHABLE_RUN_FIELDS = (
    "input",
    "config",
    "context",
    "webhook",
    "interrupt_before",
    "interrupt_after",
    "stream_mode",
    "stream_subgraphs",
    "stream_resumable",
    "durability",
)


#: what croniter reads: 5 to 7 fields (seconds and year optional) or a nickname; the
#: values' ranges are checked by croniter itself (a 422 quoting its reason)
_ATOM = "(\\*|\\?|L|[0-9]{1,4}(-[0-9]{1,4})?|[A-Za-z]{3}(-[A-Za-z]{3})?)(/[0-9]{1,4})?"
_FIELD = f"{_ATOM}(,{_ATOM})*"
_NICKNAME = "@(yearly|annually|monthly|weekly|daily|midnight|hourly)"
SCHEDULE_SCHEMA = {"type": "string", "pattern": f"^({_NICKNAME}|{_FIELD}( {_FIELD}){{4,6}})$"}
#: an IANA time zone name (absent or null: UTC)
TIMEZONE_SCHEMA = {
    "anyOf": [
        {"type": "string", "enum": sorted(zoneinfo.available_timezones())},
        {"type": "null"},
    ]
}


@attrs.frozen(kw_only=True)
class CronCreate:
    """The cron's own fields of a create body; the whole body is the run payload."""

    assistant_id: str
    schedule: str = attrs.field(metadata={"json_schema": SCHEDULE_SCHEMA})
    timezone: str | None = attrs.field(default=None, metadata={"json_schema": TIMEZONE_SCHEMA})
    end_time: dt.datetime | None = None
    on_run_completed: OnCompletion | None = None
    enabled: bool = True
    metadata: dict[str, JSON] | None = None


@attrs.frozen(kw_only=True)
class CronPatch:
    """The cron's own fields of a patch body (null means unchanged, except ``end_time``)."""

    __json_schema__: ClassVar[dict[str, Any]] = {"minProperties": 1}  # an empty body is a 400

    schedule: str | None = attrs.field(
        default=None, metadata={"json_schema": {"anyOf": [SCHEDULE_SCHEMA, {"type": "null"}]}}
    )
    timezone: str | None = attrs.field(default=None, metadata={"json_schema": TIMEZONE_SCHEMA})
    end_time: dt.datetime | None = None
    on_run_completed: OnCompletion | None = None
    enabled: bool | None = None
    metadata: dict[str, JSON] | None = None


@attrs.frozen(kw_only=True)
class CronSearch:
    assistant_id: str | None = None
    thread_id: str | None = None
    enabled: bool | None = None
    metadata: dict[str, JSON] | None = None
    limit: int = bounded(10, 1, 1000)
    offset: int = bounded(0, 0, MAX_OFFSET)
    sort_by: (
        Literal[
            "cron_id",
            "assistant_id",
            "thread_id",
            "next_run_date",
            "end_time",
            "created_at",
            "updated_at",
        ]
        | None
    ) = None
    sort_order: Literal["asc", "desc"] | None = None
    select: list[str] | None = selecting(CRON_FIELDS)


def _zone(timezone: str | None) -> dt.tzinfo:
    if timezone is None:
        return dt.UTC
    try:
        return zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InvalidRequest(
            f"Invalid timezone: '{timezone}'. Use IANA timezone format "
            "(e.g. 'America/New_York', 'Europe/Paris', 'UTC')."
        ) from None


def next_run_date(schedule: str, timezone: str | None, after: dt.datetime) -> dt.datetime:
    """The first time after ``after`` that ``schedule`` names, read in ``timezone`` (UTC by
    default, so "9 a.m." follows daylight saving time), as a UTC datetime."""
    zone = _zone(timezone)
    try:
        return croniter(schedule, after.astimezone(zone)).get_next(dt.datetime).astimezone(dt.UTC)
    except CroniterError as exc:
        raise InvalidRequest(f"Invalid cron schedule: '{schedule}'. Reason: {exc}") from None


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """A date-time without an offset is UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _with_cron_id(payload: dict[str, Any], cron_id: str) -> dict[str, Any]:
    config = payload.get("config") or {}
    if not isinstance(config, dict):
        raise InvalidRequest(f"$.config: expected an object, got {type(config).__name__}")
    configurable = config.get("configurable") or {}
    if not isinstance(configurable, dict):
        raise InvalidRequest(
            f"$.config.configurable: expected an object, got {type(configurable).__name__}"
        )
    return {**payload, "config": {**config, "configurable": {**configurable, "cron_id": cron_id}}}


def run_body(cron: Cron) -> RunCreate:
    """The run a firing of ``cron`` creates.

    With a ``context`` in the payload, the injected ``cron_id`` rides in the context: a run
    takes ``config.configurable`` or ``context``, never both (contract §1.7), and it mirrors
    one into the other anyway, so the run sees ``cron_id`` in both all the same.
    """
    payload = cron.payload
    config, context = payload.get("config"), payload.get("context")
    if isinstance(config, dict) and isinstance(context, dict) and context:
        configurable = config.get("configurable")
        if isinstance(configurable, dict) and "cron_id" in configurable:
            rest = {k: v for k, v in configurable.items() if k != "cron_id"}
            config = {k: v for k, v in config.items() if k != "configurable"}
            if rest:
                config["configurable"] = rest
            context = {**context, "cron_id": configurable["cron_id"]}
            payload = {**payload, "config": config, "context": context}
    body = structure(payload, RunCreate)
    if cron.thread_id is None:
        body = attrs.evolve(body, on_completion=cron.on_run_completed or "delete")
    return body


class CronService:
    def __init__(self, core: Core) -> None:
        self.core = core

    # -- create, read, patch, delete -----------------------------------------------------------

    async def create(self, thread_id: str | None, raw: Any) -> Cron:
        """A cron from a create body; ``thread_id`` None makes each firing a new thread."""
        fields = structure(raw, CronCreate)
        webhook = raw.get("webhook")
        if isinstance(webhook, str):  # first, as on the official server (a 422 before a 404)
            self.core.runs.webhook_policy.check(webhook)
        cron_id = new_id()
        user = current_user()
        value = {
            "payload": raw,
            "schedule": fields.schedule,
            "cron_id": cron_id,
            "thread_id": None if thread_id is None else validate_uuid(thread_id, "thread"),
            "user_id": None if user is None else user.identity,
            "end_time": fields.end_time,
            "metadata": strip_reserved(fields.metadata),
        }
        await self.core.access.authorize("crons", "create", value)
        if isinstance(value["payload"], dict):
            raw = value["payload"]
        if thread_id is not None:
            thread_id = validate_uuid(thread_id, "thread")
            try:
                await self.core.threads.visible(thread_id, "read")
            except NotFound:
                raise NotFound(
                    f"Thread with ID '{thread_id}' not found. Please verify the thread ID is "
                    "correct."
                ) from None
        assistant = await self._assistant(fields.assistant_id)
        at = now()
        cron = Cron(
            cron_id=cron_id,
            assistant_id=assistant.assistant_id,
            thread_id=thread_id,
            schedule=fields.schedule,
            timezone=fields.timezone,
            end_time=_utc(fields.end_time),
            payload=_with_cron_id({**raw, "assistant_id": assistant.assistant_id}, cron_id),
            next_run_date=next_run_date(fields.schedule, fields.timezone, at),
            metadata=strip_reserved(value.get("metadata")),
            on_run_completed=None if thread_id else (fields.on_run_completed or "delete"),
            enabled=fields.enabled,
            created_at=at,
            updated_at=at,
            user_id="" if user is None else user.identity,
            user=None if user is None else encoding.jsonable(user.dict()),
        )
        await self._check_payload(cron)
        await self.core.storage.crons.create(cron)
        return cron

    async def get(self, cron_id: str, action: str = "read", **value: Any) -> Cron:
        """The cron, if the user may do ``action`` on it (``crons.<action>``); else 404."""
        cron_id = validate_uuid(cron_id, "cron")
        allowed = await self.core.access.authorize("crons", action, {"cron_id": cron_id, **value})
        cron = await self.core.storage.crons.get(cron_id, **scoped(allowed))
        if cron is None:
            raise NotFound("Not Found")
        return cron

    async def patch(self, cron_id: str, raw: Any) -> Cron:
        """Change the given fields, in the payload too; ``next_run_date`` is recomputed."""
        if raw == {}:
            raise BadRequest("Request body cannot be empty")
        fields = structure(raw, CronPatch)
        payload = {k: raw[k] for k in PATCHABLE_RUN_FIELDS if k in raw}
        cron = await self.get(cron_id, "update", payload=payload, schedule=fields.schedule)
        if fields.on_run_completed is not None and cron.thread_id is not None:
            raise InvalidRequest(
                "$.on_run_completed: only a cron without a thread has one (its thread is kept)"
            )
        changes = {
            k: raw[k]
            for k in (*attrs.fields_dict(CronPatch), *PATCHABLE_RUN_FIELDS)
            if raw.get(k) is not None
        }
        if "end_time" in raw:  # null clears it
            changes["end_time"] = raw["end_time"]
            cron.end_time = _utc(fields.end_time)
        if fields.schedule is not None:
            cron.schedule = fields.schedule
        if fields.timezone is not None:
            cron.timezone = fields.timezone
        if fields.on_run_completed is not None:
            cron.on_run_completed = fields.on_run_completed
        if fields.enabled is not None:
            cron.enabled = fields.enabled
        if fields.metadata is not None:
            cron.metadata = strip_reserved(fields.metadata)
        cron.payload = _with_cron_id({**cron.payload, **changes}, cron.cron_id)
        cron.updated_at = now()
        cron.next_run_date = next_run_date(cron.schedule, cron.timezone, cron.updated_at)
        await self._check_payload(cron)
        await self.core.storage.crons.update(cron)
        return cron

    async def delete(self, cron_id: str) -> None:
        cron = await self.get(cron_id, "delete")
        if not await self.core.storage.crons.delete(cron.cron_id):
            raise NotFound("Not Found")

    async def search(self, query: CronSearch) -> tuple[list[dict[str, Any]], int]:
        """One page of crons as wire dicts (``select`` applied) and the number of matches."""
        check_page(query.limit, query.offset)
        check_select(query.select, CRON_FIELDS)
        criteria = self._filters(query)
        allowed = await self._search(criteria, query.limit, query.offset)
        rows, total = await self.core.storage.crons.search(
            **criteria,
            **scoped(allowed),
            sort_by=query.sort_by or "created_at",
            sort_order=query.sort_order or "desc",
            limit=query.limit,
            offset=query.offset,
        )
        return selected([to_wire(c) for c in rows], query.select), total

    async def count(self, query: CronSearch) -> int:
        criteria = self._filters(query)
        allowed = await self._search(criteria, 0, 0)
        return (await self.core.storage.crons.search(**criteria, **scoped(allowed), limit=0))[1]

    async def _search(self, criteria: dict[str, Any], limit: int, offset: int) -> Filters | None:
        """``crons.search``: its filter."""
        value = {
            "assistant_id": criteria["assistant_id"],
            "thread_id": criteria["thread_id"],
            "limit": limit,
            "offset": offset,
        }
        return await self.core.access.authorize("crons", "search", value)

    def _filters(self, query: CronSearch) -> dict[str, Any]:
        return {
            "assistant_id": self.core.graphs.resolve_assistant_id(query.assistant_id)
            if query.assistant_id is not None
            else None,
            "thread_id": validate_uuid(query.thread_id, "thread")
            if query.thread_id is not None
            else None,
            "enabled": query.enabled,
            "metadata": query.metadata,
        }

    async def _assistant(self, value: str) -> Assistant:
        """A graph id or an assistant UUID; anything else is an unknown assistant (404)."""
        try:
            return await self.core.assistants.resolve(value)
        except (InvalidRequest, NotFound):
            raise NotFound(f"Assistant '{value}' not found") from None

    async def _check_payload(self, cron: Cron) -> None:
        """Every check a run creation from the payload makes, storing nothing. A thread
        cron is checked as ``enqueue``: its own strategy is checked by name, since whether
        it rejects depends on what runs when the cron fires."""
        body = run_body(cron)
        if cron.thread_id is not None and body.multitask_strategy is not None:
            self.core.multitask.get(body.multitask_strategy)
            body = attrs.evolve(body, multitask_strategy="enqueue")
        await self.core.runs.prepare(cron.thread_id, body)

    # -- the scheduler -------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Fire due crons every ``settings.cron_interval`` seconds, until cancelled.

        Started by the lifespan in the supervisor's nursery (``start_service``) and cancelled
        with it at shutdown. Fires nothing once the supervisor stops accepting runs, nor while
        another process of a shared backend leads. A poll
        that fails is logged; the next one happens all the same.
        """
        task_status.started()
        while True:
            if self.core.supervisor.accepting and self.core.cluster.leader:
                try:
                    await self.fire_due()
                except Exception:  # storage failed: try again at the next poll
                    log.exception("cron scheduler: polling for due crons failed")
            await trio.sleep(self.core.settings.cron_interval)

    async def fire_due(self) -> None:
        """Fire every cron due now, one after the other."""
        for cron in await self.core.storage.crons.due(now()):
            if not self.core.supervisor.accepting:
                return
            try:
                await self._fire(cron)
            except Exception:  # one bad cron must not keep the others from firing
                log.exception("cron %s: firing failed", cron.cron_id)

    async def _fire(self, cron: Cron) -> None:
        """Create the cron's run, then advance it. A cron past its ``end_time`` is disabled
        instead; a run that cannot be created (thread busy with ``reject``, assistant gone)
        is logged, and the cron advances all the same."""
        crons, at = self.core.storage.crons, now()
        if cron.end_time is not None and cron.end_time <= at:
            cron.enabled = False
            cron.updated_at = at
            await crons.update(cron)
            log.info("cron %s ended at %s; disabled", cron.cron_id, cron.end_time.isoformat())
            return
        try:
            with acting_as(User.from_dict(cron.user) if cron.user else None):
                run, _ = await self.core.runs.create(cron.thread_id, run_body(cron))
            log.info("cron %s fired run %s", cron.cron_id, run.run_id)
        except TriographError as exc:
            log.warning("cron %s did not fire: %s", cron.cron_id, exc.message)
        except Exception:
            log.exception("cron %s did not fire", cron.cron_id)
        current = await crons.get(cron.cron_id)  # it may have been patched meanwhile
        if current is not None:
            current.next_run_date = next_run_date(current.schedule, current.timezone, now())
            await crons.update(current)
