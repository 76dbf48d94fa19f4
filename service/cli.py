"""The `rill` command: run, produce-demo, tail, check-config."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import orjson
import structlog

from service import __version__
from service.app import build_plan
from service.config import Settings, load_settings
from service.demo import demo_orders
from service.dlq_tools import ReplayFilter, replay_record, summarize
from service.errors import ConfigError, RillError
from service.kafka.admin import ensure_topics, partition_count
from service.kafka.clients import producer_config
from service.kafka.groups import group_status
from service.kafka.producer import BatchProducer
from service.kafka.reader import read_topic
from service.observability.logging import configure_logging
from service.planner import cli as plan_cli
from service.processing.dlq import reason_of
from service.records import InRecord, OutRecord
from service.serde import Serde
from service.serdes import side_serde

log = structlog.get_logger("rill.cli")


def _cmd_run(settings: Settings, _args: argparse.Namespace) -> int:
    if settings.consumer.processes > 1:
        return _run_supervisor(settings)
    from service.runtime.service import Service  # noqa: PLC0415 - keeps `rill tail` light

    worker = Service(settings, build_plan(settings))

    def stop(signum: int, _frame: Any) -> None:
        log.info("stop requested", signal=signal.Signals(signum).name)
        worker.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.run()
    return 0


def _run_supervisor(settings: Settings) -> int:
    """RILL_PROCESSES > 1: a supervisor of that many workers (docs/processes.md)."""
    from service.runtime.supervisor import Supervisor  # noqa: PLC0415 - as in _cmd_run

    build_plan(settings)  # a bad pipeline fails here, once, not in every child
    supervisor = Supervisor(settings)

    def stop(signum: int, _frame: Any) -> None:
        log.info("stop requested", signal=signal.Signals(signum).name)
        supervisor.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return supervisor.run()


def _cmd_produce_demo(settings: Settings, args: argparse.Namespace) -> int:
    topic = args.topic or settings.topics.input
    serde = side_serde(settings.input)
    common = settings.kafka.librdkafka_common()
    if partition_count(common, topic) is None:
        ensure_topics(common, [topic], args.partitions)
    producer = BatchProducer(producer_config(settings), __version__).start()
    interval = 1.0 / args.rate if args.rate > 0 else 0.0
    started = time.monotonic()
    sent = 0
    # Event time starts now and, at a set rate, keeps pace with the wall clock, so a
    # second demo run is never behind the watermark the first one left in Redis.
    step_ms = args.step_ms if args.step_ms is not None else (1000 / args.rate if args.rate else 250)
    orders = demo_orders(
        args.count,
        seed=args.seed,
        customers=args.customers,
        start_ms=time.time_ns() // 1_000_000,
        step_ms=step_ms,
    )
    for i, order in enumerate(orders):
        producer.send([OutRecord(topic, order[args.key].encode(), serde.encode(order))])
        if args.corrupt_every and i % args.corrupt_every == args.corrupt_every - 1:
            producer.send([OutRecord(topic, b"corrupt", b"\x00\x00\x00\x00\x01garbage")])
        sent += 1
        if interval:
            delay = started + sent * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    refused = producer.flush(60)
    producer.close()
    print(f"produced {sent - len(refused)} demo orders to {topic}", file=sys.stderr)
    return 1 if refused else 0


def _render(value: bytes | None, serde: Serde | None) -> Any:
    if value is None:
        return None
    if serde is not None:
        try:
            return serde.decode(value)
        except RillError:
            pass
    return value.decode("utf-8", "replace")


def _cmd_tail(settings: Settings, args: argparse.Namespace) -> int:
    sides = {settings.topics.input: settings.input, settings.topics.output: settings.output}
    side = sides.get(args.topic)
    # A registry-framed topic is shown undecoded (tail holds no registry client).
    serde = side_serde(side) if side and side.wire != "registry" else None
    count = 0
    for rec in read_topic(
        settings.kafka.librdkafka_common(),
        args.topic,
        from_beginning=not args.from_end,
        idle_timeout_s=args.timeout,
        max_records=args.max,
        follow=args.follow,
        since_ms=args.since_ms,
    ):
        line: dict[str, Any] = {
            "partition": rec.partition,
            "offset": rec.offset,
            "key": rec.key.decode("utf-8", "replace") if rec.key else None,
            "value": _render(rec.value, serde),
        }
        reason = reason_of(rec.headers)
        if reason:
            line["reason"] = reason
        sys.stdout.write(orjson.dumps(line, default=str).decode() + "\n")
        count += 1
    sys.stdout.flush()
    print(f"{count} records from {args.topic}", file=sys.stderr)
    return 0


def _cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    status = group_status(
        settings.kafka.librdkafka_common(),
        args.group or settings.kafka.group_id,
        args.topic or settings.topics.input,
    )
    if args.json:
        print(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(f"group {status.group}: {status.state}, {len(status.members)} members")
    for m in status.members:
        parts = ", ".join(f"{t}[{p}]" for t, p in m.partitions) or "-"
        print(f"  {m.client_id} {m.host} {m.member_id[:24]}: {parts}")
    print(f"{'topic':<24} {'part':>4} {'committed':>10} {'end':>10} {'lag':>8} {'lag_s':>8}")
    for r in status.partitions:
        print(
            f"{r.topic:<24} {r.partition:>4} {r.committed:>10} {r.end:>10} {r.lag:>8} "
            f"{r.lag_seconds:>8.1f}"
        )
    total = sum(r.lag for r in status.partitions)
    print(f"total lag: {total} records")
    return 0


def _dlq_records(settings: Settings, args: argparse.Namespace) -> list[InRecord]:
    return list(
        read_topic(
            settings.kafka.librdkafka_common(),
            args.topic or settings.topics.dlq,
            idle_timeout_s=args.timeout,
            max_records=args.max,
        )
    )


def _cmd_dlq_inspect(settings: Settings, args: argparse.Namespace) -> int:
    records = _dlq_records(settings, args)
    groups = summarize(records, samples=args.samples)
    if args.json:
        print(orjson.dumps(groups, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(f"{len(records)} DLQ records in {args.topic or settings.topics.dlq}")
    for g in groups:
        print(
            f"  {g['count']:>7}  {g['stage']:<10} {g['error_class']:<24} "
            f"from {', '.join(g['source_topics'])}"
        )
        for example in g["examples"]:
            print(f"           e.g. {example[:160]}")
    return 0


def _cmd_dlq_replay(settings: Settings, args: argparse.Namespace) -> int:
    chosen = ReplayFilter(
        stage=args.stage,
        error_class=args.error_class,
        source_partition=args.source_partition,
        min_offset=args.min_offset,
        max_offset=args.max_offset,
        message_contains=args.contains,
    )
    target = args.to or settings.topics.input
    replay = [replay_record(r, target) for r in _dlq_records(settings, args) if chosen.matches(r)]
    if args.dry_run:
        print(f"would replay {len(replay)} records to {target}")
        return 0
    producer = BatchProducer(producer_config(settings), __version__).start()
    producer.send(replay)
    refused = producer.flush(60)
    producer.close()
    print(f"replayed {len(replay) - len(refused)} records to {target}")
    return 1 if refused else 0


def _cmd_check_config(settings: Settings, _args: argparse.Namespace) -> int:
    # Builds the plan only: no connection is opened (the worker opens them in `run`).
    plan = build_plan(settings)
    print(f"configuration is valid; pipeline steps: {[s.name for s in plan.steps]}")
    if plan.join is not None:
        j = plan.join
        into = f"into {j.as_!r}" if j.as_ else "merged"
        print(f"joined first with table {j.topic!r} by {j.key_name} ({j.kind}, {into})")
    if plan.dedupe is not None:
        d = plan.dedupe
        print(
            f"de-duplicated by {d.name} within {d.within_ms} ms (duplicates to the DLQ: {d.to_dlq})"
        )
    if plan.regroup is not None:
        print(f"group_by {plan.regroup.name}: re-keyed through {plan.regroup.topic}")
    return 0


def parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(prog="rill", description="Kafka stream processing with Redis state")
    p.add_argument("--version", action="version", version=f"rill {__version__}")
    p.add_argument("-c", "--config", help="pipeline YAML file (default: $RILL_CONFIG)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run a worker of the consumer group")
    demo = sub.add_parser("produce-demo", help="produce demo order events to the input topic")
    demo.add_argument("--count", type=int, default=1000)
    demo.add_argument("--rate", type=float, default=0, help="records per second (0: no limit)")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--customers", type=int, default=20)
    demo.add_argument(
        "--step-ms",
        type=float,
        default=None,
        help="mean event-time gap between orders (default: 1000/rate, or 250 without a rate)",
    )
    demo.add_argument(
        "--key",
        choices=("customer_id", "order_id"),
        default="customer_id",
        help="the field the orders are keyed (and so partitioned) by; order_id shows group_by",
    )
    demo.add_argument("--topic", help="default: the input topic")
    demo.add_argument("--partitions", type=int, default=4, help="if the topic is created")
    demo.add_argument(
        "--corrupt-every",
        type=int,
        default=0,
        help="also produce one corrupt record after every N orders",
    )
    tail = sub.add_parser("tail", help="decode and print a topic as JSON lines")
    tail.add_argument("topic")
    tail.add_argument("--max", type=int, default=None)
    tail.add_argument("--timeout", type=float, default=5.0, help="stop after this idle time")
    tail.add_argument("--follow", action="store_true")
    tail.add_argument("--from-end", action="store_true")
    tail.add_argument(
        "--since-ms", type=int, default=None, help="only records stamped at or after (epoch ms)"
    )
    sub.add_parser("check-config", help="validate the configuration and exit")
    plan_cli.add_arguments(
        sub.add_parser(
            "plan",
            help="simulate HPA and KEDA scaling on a traffic profile (no cluster needed)",
            description=plan_cli.DESCRIPTION,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    status = sub.add_parser("status", help="group members, offsets and lag per partition")
    status.add_argument("--group", help="default: RILL_GROUP_ID")
    status.add_argument("--topic", help="default: RILL_INPUT_TOPIC")
    status.add_argument("--json", action="store_true")
    dlq = sub.add_parser("dlq", help="inspect or replay the DLQ").add_subparsers(
        dest="dlq_command", required=True
    )
    inspect = dlq.add_parser("inspect", help="DLQ records grouped by reason")
    replay = dlq.add_parser("replay", help="re-produce DLQ records to the input topic")
    for cmd in (inspect, replay):
        cmd.add_argument("--topic", help="the DLQ topic (default: RILL_DLQ_TOPIC)")
        cmd.add_argument("--max", type=int, default=None)
        cmd.add_argument("--timeout", type=float, default=3.0)
    inspect.add_argument("--samples", type=int, default=2)
    inspect.add_argument("--json", action="store_true")
    replay.add_argument("--stage", help="decode, join, transform, encode, late, route, produce")
    replay.add_argument("--error-class")
    replay.add_argument("--source-partition", type=int)
    replay.add_argument("--min-offset", type=int)
    replay.add_argument("--max-offset", type=int)
    replay.add_argument("--contains", help="a text the error message contains")
    replay.add_argument("--to", help="target topic (default: RILL_INPUT_TOPIC)")
    replay.add_argument("--dry-run", action="store_true")
    return p


COMMANDS = {
    "run": _cmd_run,
    "produce-demo": _cmd_produce_demo,
    "tail": _cmd_tail,
    "check-config": _cmd_check_config,
    "status": _cmd_status,
    "dlq inspect": _cmd_dlq_inspect,
    "dlq replay": _cmd_dlq_replay,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `rill` and `python -m service`."""
    args = parser().parse_args(argv)
    if args.command == "plan":  # pure simulation: no settings, no brokers
        return plan_cli.run(args)
    try:
        settings = load_settings(args.config)
        configure_logging(settings.observability.log_level, settings.observability.log_format)
        name = f"dlq {args.dlq_command}" if args.command == "dlq" else args.command
        return COMMANDS[name](settings, args)
    except ConfigError as exc:
        print(f"rill: {exc}", file=sys.stderr)
        return 2
    except RillError as exc:
        log.error("stopped on error", error=str(exc), error_class=type(exc).__name__)
        return 1
