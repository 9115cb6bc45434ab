"""The review API: list, read, claim and resolve referred items (/v1/referrals).

Store calls are blocking SQLAlchemy: each runs in a thread. A database that cannot be reached
answers 503 here, while predictions keep answering (their referrals go to the spool).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Query, Request
from sqlalchemy.exc import SQLAlchemyError

from service.api.deps import SettingsDep
from service.api.errors import ERROR_RESPONSES
from service.api.referral_schemas import (
    ClaimRequest,
    ReferralPage,
    ReferralPublic,
    ResolveRequest,
)
from service.api.schemas import ErrorResponse
from service.referrals.errors import ReferralStoreUnavailable
from service.referrals.recorder import ReferralRecorder
from service.referrals.store import ReferralStore

log = logging.getLogger("mcdrop.api")

router = APIRouter(prefix="/v1/referrals", tags=["referrals"])

T = TypeVar("T")


def _documented(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _documented("No referral with that id.")}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: _documented("Already resolved, or claimed by another reviewer.")
}
_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: _documented("The referral database cannot be reached.")
}
_INVALID: dict[int | str, dict[str, Any]] = {422: ERROR_RESPONSES[422]}


async def _run(request: Request, call: Callable[[ReferralStore], T]) -> T:
    recorder: ReferralRecorder | None = request.app.state.referrals
    store = recorder.store if recorder is not None else None
    if store is None:
        raise ReferralStoreUnavailable("the referral store is not available; retry later")
    try:
        return await asyncio.to_thread(call, store)
    except SQLAlchemyError as e:
        log.warning(
            "request %s: referral store error: %s",
            getattr(request.state, "request_id", ""),
            type(e).__name__,
        )
        raise ReferralStoreUnavailable("the referral store failed; retry later") from None


@router.get("", response_model=ReferralPage, responses={**_INVALID, **_UNAVAILABLE})
async def list_referrals(
    request: Request,
    status: Annotated[
        Literal["pending", "resolved"], Query(description="pending or resolved.")
    ] = "pending",
    model: Annotated[str | None, Query(max_length=128, description="Only this model.")] = None,
    reviewer: Annotated[
        str | None,
        Query(max_length=128, description="Also list pending items this reviewer has claimed."),
    ] = None,
    order: Annotated[
        Literal["newest", "oldest"], Query(description="newest first, or oldest first.")
    ] = "newest",
    limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="Items to skip.")] = 0,
) -> ReferralPage:
    """Referrals by status and model, newest first by default. Pending items claimed by another
    reviewer are hidden until their lease ends."""

    def query(store: ReferralStore) -> Any:
        return store.find(status, model, reviewer, limit, offset, order == "newest")

    page = await _run(request, query)
    next_offset = offset + limit if offset + limit < page.total else None
    return ReferralPage(
        items=[ReferralPublic.of(r) for r in page.items],
        total=page.total,
        limit=limit,
        offset=offset,
        next_offset=next_offset,
    )


@router.get(
    "/{referral_id}", response_model=ReferralPublic, responses={**_NOT_FOUND, **_UNAVAILABLE}
)
async def get_referral(referral_id: str, request: Request) -> ReferralPublic:
    """One referral, whatever its status or claim."""
    return ReferralPublic.of(await _run(request, lambda s: s.get(referral_id)))


@router.post(
    "/{referral_id}/claim",
    response_model=ReferralPublic,
    responses={**_NOT_FOUND, **_CONFLICT, **_INVALID, **_UNAVAILABLE},
)
async def claim_referral(
    referral_id: str, body: ClaimRequest, request: Request, settings: SettingsDep
) -> ReferralPublic:
    """Take a pending referral for a lease time; 409 when another reviewer holds it or it is
    resolved. The same reviewer claiming again renews the lease."""
    lease = body.lease_s or settings.referral_claim_lease_s
    return ReferralPublic.of(
        await _run(request, lambda s: s.claim(referral_id, body.reviewer, lease))
    )


@router.post(
    "/{referral_id}/resolve",
    response_model=ReferralPublic,
    responses={**_NOT_FOUND, **_CONFLICT, **_INVALID, **_UNAVAILABLE},
)
async def resolve_referral(
    referral_id: str, body: ResolveRequest, request: Request
) -> ReferralPublic:
    """Answer a referral with the true label (classifiers) or value (regression). 409 when it
    is already resolved or another reviewer's claim is running."""
    value = [float(body.value)] if isinstance(body.value, int | float) else body.value
    return ReferralPublic.of(
        await _run(
            request, lambda s: s.resolve(referral_id, body.reviewer, body.label, value, body.note)
        )
    )
