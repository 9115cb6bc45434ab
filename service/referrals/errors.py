"""Referral errors, each with the HTTP status the API's one domain-error handler gives it."""

from __future__ import annotations

from service.errors import MCDropError


class ReferralNotFound(MCDropError):
    """No referral with that id."""

    status_code = 404


class ReferralConflict(MCDropError):
    """The referral is already resolved, or claimed by another reviewer."""

    status_code = 409


class ReferralStoreUnavailable(MCDropError):
    """The referral database cannot be reached (predictions still answer; records are spooled)."""

    status_code = 503
