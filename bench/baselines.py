"""The bare baselines: plain boto3 loops, run as their own processes (no Django, no database).

    python -m bench.baselines consume --endpoint URL --queue-url URL --count N --wait 10 --out f.json
    python -m bench.baselines callbacks --endpoint URL --count N --start-at EPOCH --out f.json

`consume` receives (batches of 10, long poll) and deletes the same messages the portal would
ingest, and records when each arrived: the floor for ingestion (scenario 1) and queue-to-inbox
latency (scenario 2). `callbacks` calls SendTaskSuccess in a loop: the floor for the callback
ceiling (scenario 4). Times are time.time() so the bench can compare them with its own.
"""

import argparse
import json
import time

import boto3
from botocore.config import Config

CONFIG = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"})


def client(service: str, endpoint: str):
    return boto3.session.Session().client(
        service,
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - the emulator takes any
        config=CONFIG,
    )


def consume(args) -> dict:
    sqs = client("sqs", args.endpoint)
    received: dict[str, float] = {}
    first = None
    deadline = time.monotonic() + args.timeout
    while len(received) < args.count and time.monotonic() < deadline:
        messages = sqs.receive_message(
            QueueUrl=args.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=args.wait, VisibilityTimeout=60
        ).get("Messages", [])
        now = time.time()
        if messages and first is None:
            first = now
        for message in messages:
            received.setdefault(message["MessageId"], now)
        if messages:
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
            sqs.delete_message_batch(QueueUrl=args.queue_url, Entries=entries)
            if args.progress:
                print(len(received), flush=True)  # the bench's feeder stays a fixed depth ahead
    return {"received": received, "first": first, "done": time.time(), "count": len(received)}


def callbacks(args) -> dict:
    sfn = client("stepfunctions", args.endpoint)
    token = "AQCEAAAAKgAAAAMAAAAAAAAAA" + "x" * 975  # a real-format length; the endpoint ignores it
    output = json.dumps({"approved": True, "decision": "approved", "comment": ""})
    for _ in range(20):  # warm-up: connection, signing, botocore's caches
        sfn.send_task_success(taskToken=token, output=output)
    while time.time() < args.start_at:
        time.sleep(0.001)
    started = time.time()
    for _ in range(args.count):
        sfn.send_task_success(taskToken=token, output=output)
    return {"started": started, "done": time.time(), "count": args.count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("consume")
    c.add_argument("--endpoint", required=True)
    c.add_argument("--queue-url", required=True)
    c.add_argument("--count", type=int, required=True)
    c.add_argument("--wait", type=int, default=10)
    c.add_argument("--timeout", type=float, default=900)
    c.add_argument("--out", required=True)
    c.add_argument("--progress", action="store_true", help="print the count after each deleted batch")
    s = sub.add_parser("callbacks")
    s.add_argument("--endpoint", required=True)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--start-at", type=float, required=True)
    s.add_argument("--out", required=True)
    args = parser.parse_args()
    result = consume(args) if args.command == "consume" else callbacks(args)
    with open(args.out, "w") as out:
        json.dump(result, out)


if __name__ == "__main__":
    main()
