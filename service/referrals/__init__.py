"""The referral queue: every abstained row is kept for a person to answer.

models.py (the table), database.py (engine, migrations), store.py (queries: add, list, claim,
resolve), spool.py (local fallback file), recorder.py (the prediction path's writer),
webhook.py (notifications), export.py (resolved items as held-out data).
"""
