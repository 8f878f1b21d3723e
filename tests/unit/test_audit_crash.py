"""Crash rounds: a process appending to the audit log is killed with SIGKILL at a
random point, several times over; afterwards every append it saw return is in the
log, and the log (continued and closed by one more start) verifies."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit import keys, read_events
from gateway.audit.verify import verify
from gateway.audit.writer import ChainWriter
from tests.unit.audit_helpers import settings

ROOT = Path(__file__).resolve().parents[2]

WRITER = """
import asyncio, sys
from pathlib import Path
from gateway.audit.log import AuditLog
from gateway.config import AuditConfig

async def main() -> None:
    log = AuditLog(AuditConfig(
        dir=Path(sys.argv[1]), key_file=Path(sys.argv[2]), instance_id="gw1",
        checkpoint_every_events=7, segment_max_bytes=4000,
    ))
    await log.start()
    n = 0

    async def one(i: int) -> None:
        await log.append({"v": 1, "type": "request", "round": int(sys.argv[3]), "n": i})
        print(i, flush=True)  # acknowledged: the event is durable

    while True:
        await asyncio.gather(*(one(n + k) for k in range(5)))
        n += 5

asyncio.run(main())
"""


def _crash_round(audit_dir: Path, key_file: Path, round_: int, after: int) -> set[int]:
    """Run the writer until it acknowledged ``after`` events, SIGKILL it: what it acked."""
    process = subprocess.Popen(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", WRITER, str(audit_dir), str(key_file), str(round_)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    acked: set[int] = set()
    assert process.stdout is not None
    try:
        while len(acked) < after:
            line = process.stdout.readline()
            assert line, "the writer process ended early"
            acked.add(int(line))
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        process.stdout.close()
    return acked


def test_every_acknowledged_event_survives_sigkill_rounds_and_the_log_verifies(
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "audit.key"
    private: Ed25519PrivateKey = keys.generate(key_file)
    audit_dir = tmp_path / "audit"
    chooser = random.Random(11)  # noqa: S311 - where to kill, not a secret
    acked = {
        round_: _crash_round(audit_dir, key_file, round_, chooser.randint(1, 60))
        for round_ in range(5)
    }
    # One more start continues the chain (sealing any torn line) and closes it.
    writer = ChainWriter(settings(audit_dir, instance="gw1"), private)
    writer.open()
    writer.close()
    logged: dict[int, set[int]] = {round_: set() for round_ in acked}
    for line in read_events(audit_dir):
        if line["type"] == "request":
            logged[line["round"]].add(line["n"])
    for round_, numbers in acked.items():
        assert numbers <= logged[round_], f"round {round_} lost acknowledged events"
    report = verify([audit_dir], private.public_key())[0]
    assert report.ok, report.problem
