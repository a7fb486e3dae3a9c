"""Which requests were committed, and when, pushed by PostgreSQL instead of polled.

The bench installs, in its own database only, an AFTER INSERT trigger on the requests table that
sends `pg_notify('bench_requests', <SQS message id>)`. PostgreSQL delivers a notification when
(and only if) the inserting transaction commits, so a listener learns each committed request's
message id at its commit, on one idle connection, without asking the database again and again.
The cost inside the portal's ingest transaction is one trigger call and a small queue entry per
row; the product's code and schema are unchanged (the trigger lives in the bench's database).
"""

from __future__ import annotations

import threading
import time

import psycopg

CHANNEL = "bench_requests"


def install_commit_notifications(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute(
            f"""
            CREATE OR REPLACE FUNCTION bench_request_committed() RETURNS trigger AS $$
            BEGIN
                PERFORM pg_notify('{CHANNEL}', NEW.sqs_message_id);
                RETURN NULL;
            END
            $$ LANGUAGE plpgsql
            """
        )
        connection.execute("DROP TRIGGER IF EXISTS bench_request_committed ON approvals_approvalrequest")
        connection.execute(
            "CREATE TRIGGER bench_request_committed AFTER INSERT ON approvals_approvalrequest "
            "FOR EACH ROW EXECUTE FUNCTION bench_request_committed()"
        )


class CommittedRequests(threading.Thread):
    """Listens for the trigger's notifications: message id → the time its request was committed.

    `count()` is what was committed since the listener started (the feeder's progress).
    """

    def __init__(self, database_url: str):
        super().__init__(daemon=True, name="bench-committed-requests")
        self.connection = psycopg.connect(database_url, autocommit=True)
        self.connection.execute(f"LISTEN {CHANNEL}")
        self.seen: dict[str, float] = {}
        self.duplicates = 0
        self.stopping = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.stopping.is_set():
            for notify in self.connection.notifies(timeout=0.2):
                now = time.time()
                if not notify.payload:
                    continue  # a request made without a queue message (other scenarios' fixtures)
                if notify.payload in self.seen:
                    self.duplicates += 1  # the same message id committed twice: would be a double
                else:
                    self.seen[notify.payload] = now

    def count(self) -> int:
        return len(self.seen)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)
        self.connection.close()
