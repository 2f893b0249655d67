"""The progress scrape of handlers/jobs.py against a real HTTP server on loopback.

One scraper for every kind; the kind supplies the parser (``JobKind.parse_progress``: a
trainer's gauges by default, a federation's ServerApp gauges for a FederatedJob). A pod runs
code the operator does not control: its metrics answer is read with a time and size bound and
no redirect is ever followed (a redirect would be a request the operator makes on the pod's
behalf).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ppml_operator.handlers import jobs
from ppml_operator.reconcile.kinds import FEDERATED
from ppml_runtime import contract as rc
from ppml_runtime.federated import contract as fc

hits: list[str] = []


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        hits.append(self.path)
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/target")
            self.end_headers()
            return
        if self.path == "/huge":
            body = b"# padding\n" * (jobs.PROGRESS_MAX_BYTES // 10 + 10)
        elif self.path == "/federation":
            body = (f"{fc.METRIC_ROUNDS_COMPLETED} 2\n{fc.METRIC_TOTAL_ROUNDS} 3\n"
                    f'{fc.METRIC_ROUND_SECONDS}{{round="1"}} 1.5\n'
                    f'{fc.METRIC_ROUND_SECONDS}{{round="2"}} 2.25\n').encode()
        elif self.path == "/bad-federation":
            body = f"{fc.METRIC_ROUNDS_COMPLETED} +Inf\n".encode()
        elif self.path == "/target":
            body = f"{rc.METRIC_STEP} 99\n".encode()
        else:
            body = f"{rc.METRIC_STEP} 7\n{rc.METRIC_TOTAL_STEPS} 20\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    hits.clear()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_gauges_are_read(server: str) -> None:
    snap = jobs.scrape_progress(f"{server}/metrics")
    assert snap is not None and snap.step == 7 and snap.total_steps == 20


def test_a_redirect_is_never_followed(server: str) -> None:
    assert jobs.scrape_progress(f"{server}/redirect") is None
    assert hits == ["/redirect"]


def test_an_answer_over_the_size_bound_gives_no_progress(server: str) -> None:
    assert jobs.scrape_progress(f"{server}/huge") is None


def test_nothing_listening_gives_no_progress() -> None:
    assert jobs.scrape_progress("http://127.0.0.1:9/metrics") is None


def test_a_federations_gauges_are_read_with_its_kinds_parser(server: str) -> None:
    snap = jobs.scrape_progress(f"{server}/federation", FEDERATED.parse_progress)
    assert snap == fc.FederationProgress(rounds_completed=2, total_rounds=3,
                                         round_seconds={1: 1.5, 2: 2.25})


def test_out_of_range_federation_gauges_give_no_progress(server: str) -> None:
    assert jobs.scrape_progress(f"{server}/bad-federation", FEDERATED.parse_progress) is None
