"""A short pass of the fuzzer in tests/fuzz/ (the long run's command and figures are in the README):
mutated DNS messages against a running `clusterdns serve`, mutated manifests against `clusterdns check`."""

from __future__ import annotations

from pathlib import Path

from fuzz.fuzz import run_manifests, run_packets


def test_fuzzed_packets_answered_without_failure(tmp_path: Path) -> None:
    """20,000 mutated UDP datagrams and 2,000 TCP messages (split, pipelined, lying length prefixes): no
    crash, hang, traceback, SERVFAIL or undecodable answer, and the server's memory stays bounded."""
    report = run_packets(20_000, 2_000, seed=11, workdir=tmp_path)
    assert report.ok, report.text()
    assert report.cases >= 22_000
    start, most, _ = report.rss_kb
    assert most - start < 100 * 1024, report.text()


def test_fuzzed_manifests_checked_without_failure(tmp_path: Path) -> None:
    """300 mutated manifests (and now and then a nesting, alias or size bomb): `clusterdns check` never
    crashes, hangs or prints a traceback, and every problem names its line."""
    report = run_manifests(300, seed=11, workdir=tmp_path, timeout=30)
    assert report.ok, report.text()
    assert report.cases == 300
    assert not report.notes, report.text()
