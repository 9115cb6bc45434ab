"""Referral ids: uuid4-shaped, unique, and never shared with a forked child."""

from __future__ import annotations

import os
import uuid

from service.referrals.records import _RandomIds, new_referral_id


def test_ids_are_unique_uuid4_hex_across_several_draws() -> None:
    ids = [new_referral_id() for _ in range(3 * _RandomIds.BATCH + 7)]
    assert len(set(ids)) == len(ids)
    for i in ids:
        assert len(i) == 32
        parsed = uuid.UUID(i)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_a_forked_child_draws_its_own_ids() -> None:
    new_referral_id()  # the parent now holds drawn ids
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.write(write, new_referral_id().encode())
        os._exit(0)
    os.close(write)
    child_id = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    parent_ids = {new_referral_id() for _ in range(_RandomIds.BATCH)}
    assert len(child_id) == 32
    assert child_id not in parent_ids
