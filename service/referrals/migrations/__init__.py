"""Alembic migrations of the referral store (script_location `service.referrals:migrations`)."""
