"""bench/scaleout.py's pure parts (argument checks, the memory slope, the tables); the benchmark
itself starts real processes and is run by hand (docs/scaling.md)."""

import collections

import pytest

from bench.scaleout import (
    MEMORY_HEADER,
    memory_rows,
    memory_slopes,
    parse_args,
    render_table,
    slope_per_10k,
    waits_summary,
)


def test_defaults_are_its_own_database_and_redis_db_and_four_host_steps():
    args = parse_args([])
    assert (args.database, args.redis_db, args.hosts, args.rss) == ("payhook_scalebench", 12, [1, 2, 3, 4], False)
    # What bench/pipeline.py's Bench reads is there.
    assert args.live_seconds == args.seconds and args.scrape_metrics is False


def test_the_memory_rerun_is_one_flag():
    args = parse_args(["--rss", "--events", "100000"])
    assert args.rss and args.events == 100_000 and args.sample_every == 5000


def test_memory_mode_does_not_keep_sent_mail_in_the_workers():
    # locmem appends every message to mail.outbox: the workers' memory would grow with the e-mails.
    assert parse_args(["--rss"]).email_backend == "django.core.mail.backends.dummy.EmailBackend"
    assert parse_args([]).email_backend == "django.core.mail.backends.locmem.EmailBackend"
    assert parse_args(["--rss", "--email-backend", "x.Backend"]).email_backend == "x.Backend"


@pytest.mark.parametrize("argv", [["--hosts", "0"], ["--hosts", "1,x"], ["--redis-db", "0"], ["--database", "payhook"],
                                  ["--database", "bench; drop"], ["--rate", "0"], ["--events", "0"]])
def test_refuses_arguments_that_would_hit_a_shared_database_or_make_no_sense(argv):
    with pytest.raises(SystemExit):
        parse_args(argv)


def test_the_help_names_the_rerun_command(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    assert "bench/scaleout.py --rss --events 100000" in capsys.readouterr().out


def test_slope_is_megabytes_per_ten_thousand_events():
    # 0.5 MB every 5,000 events = 1 MB per 10k, whatever the intercept.
    assert slope_per_10k([(5000 * k, 300 + 0.5 * k) for k in range(6)]) == pytest.approx(1.0)
    assert slope_per_10k([(0, 10.0), (10_000, 10.0), (20_000, 10.0)]) == pytest.approx(0.0)


def test_slope_needs_two_distinct_points():
    assert slope_per_10k([]) is None
    assert slope_per_10k([(5000, 1.0), (5000, 2.0)]) is None


def test_memory_slopes_leave_out_the_warm_up():
    samples = []
    for k in range(7):
        events = 5000 * k
        # Grows fast while warming up (imports, caches), then flat.
        mb = 200.0 + (40.0 * k if events < 10_000 else 80.0)
        samples.append({"fulfilled": events, "received": events, "web_rss_mb": mb, "web_pss_mb": mb, "worker_rss_mb": mb,
                        "worker_pss_mb": mb, "web_workers_rss_mb": mb, "worker_pools_rss_mb": mb, "load": "1.0"})
    assert memory_slopes(samples, warmup=10_000)["worker_rss_mb"] == pytest.approx(0.0)
    assert memory_slopes(samples, warmup=0)["worker_rss_mb"] > 0
    assert len(memory_rows(samples)[0]) == len(MEMORY_HEADER)


def test_table_is_markdown_with_dashes_for_missing_values():
    text = render_table(["M", "rate"], [[1, 70.5], [2, None]])
    lines = text.splitlines()
    assert lines[0] == "| M | rate |"
    assert set(lines[1]) == {"|", "-"}
    assert lines[3] == "| 2 | -    |"


def test_waits_are_shares_of_the_active_session_samples():
    samples = [collections.Counter({"IO:WALSync": 3, "CPU (no wait event)": 1}), collections.Counter({"IO:WALSync": 1})]
    assert waits_summary(samples) == {"IO:WALSync": 80.0, "CPU (no wait event)": 20.0}
    assert waits_summary([]) == {}
