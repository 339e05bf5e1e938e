"""InProcessRouter on its own, with fake links: routes belong to the agent link they were sent on.

Agent request ids come from each link's own session and start at 1 on every connection, so a
device's old and new connections can have the same id in flight at once.
"""

from __future__ import annotations

import pytest

from posassist.protocol import messages as m
from posassist.relay.routing import InProcessRouter, OfflineError, Route
from tests.protocol.test_session import open_agent_pair, pump

DEVICE = "dev_1"


class FakeLink:
    """A peer with a real, open relay-side Session, that records what it was sent."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.far_end, self.session = open_agent_pair()  # far_end: the agent's own Session
        self.sent: list[tuple[int | None, m.Message]] = []

    def send_nowait(self, msg: m.Message, request_id: int | None = None) -> None:
        if request_id is None:
            self.session.send(msg)
        else:
            self.session.send_with_id(msg, request_id)
        self.sent.append((request_id, msg))


def _forward(
    router: InProcessRouter, console: FakeLink, console_request_id: int, *, timeout: float = 10
) -> Route:
    request = m.DiagnosticsRequest(id=console_request_id, device_id=DEVICE, timeout=timeout)
    return router.forward(
        console,
        request,
        device_id=DEVICE,
        job_id=f"job_{console_request_id}",
        user="tech",
        now=100.0,
        timeout=timeout,
    )


def _report(agent_request_id: int) -> m.DiagnosticsReport:
    return m.DiagnosticsReport(id=agent_request_id, device_id=DEVICE, collected_at=1.0, sections={})


@pytest.fixture
def router() -> InProcessRouter:
    return InProcessRouter()


def test_the_same_agent_request_id_on_old_and_new_link_are_two_routes(
    router: InProcessRouter,
) -> None:
    old = FakeLink("old")
    router.attach_agent(DEVICE, old)
    first_console, second_console = FakeLink("console 1"), FakeLink("console 2")
    first = _forward(router, first_console, 41)
    new = FakeLink("new")
    router.attach_agent(DEVICE, new)
    second = _forward(router, second_console, 42)
    assert (first.agent, first.agent_request_id) == (old, 1)
    assert (second.agent, second.agent_request_id) == (new, 1)
    assert [rid for rid, _ in old.sent] == [1]
    assert [rid for rid, _ in new.sent] == [1]
    assert router.routes_in_flight == 2


def test_a_reply_reaches_the_console_of_the_link_it_came_in_on(router: InProcessRouter) -> None:
    old = FakeLink("old")
    router.attach_agent(DEVICE, old)
    first_console, second_console = FakeLink("console 1"), FakeLink("console 2")
    first = _forward(router, first_console, 41)
    new = FakeLink("new")
    router.attach_agent(DEVICE, new)
    second = _forward(router, second_console, 42)

    assert router.deliver(new, _report(1), now=101.0) is second
    assert router.deliver(new, _report(1), now=101.0) is None  # terminal: the route is gone
    assert router.deliver(old, _report(1), now=101.0) is first
    assert (first.console, first.console_request_id) == (first_console, 41)
    assert (second.console, second.console_request_id) == (second_console, 42)
    assert router.routes_in_flight == 0


def test_detaching_the_replaced_link_returns_only_its_routes(router: InProcessRouter) -> None:
    old = FakeLink("old")
    router.attach_agent(DEVICE, old)
    console = FakeLink("console")
    first = _forward(router, console, 41)
    new = FakeLink("new")
    router.attach_agent(DEVICE, new)
    second = _forward(router, console, 42)

    assert router.detach_agent(DEVICE, old) == [first]
    assert router.agent(DEVICE) is new  # the old link was no longer current
    assert router.routes_in_flight == 1
    # a late reply on the old link matches nothing; the new link's route with that id stays
    assert router.deliver(old, _report(1), now=101.0) is None
    assert router.deliver(new, _report(1), now=101.0) is second

    assert router.detach_agent(DEVICE, new) == []
    assert router.agent(DEVICE) is None
    assert router.agents_online() == 0


def test_detaching_the_current_link_returns_its_routes(router: InProcessRouter) -> None:
    old, new = FakeLink("old"), FakeLink("new")
    router.attach_agent(DEVICE, old)
    assert router.attach_agent(DEVICE, new) is old
    console = FakeLink("console")
    route = _forward(router, console, 41)
    assert router.detach_agent(DEVICE, old) == []
    assert router.detach_agent(DEVICE, new) == [route]
    assert router.agent(DEVICE) is None


def test_expire_abandons_on_the_link_the_request_was_sent_on(router: InProcessRouter) -> None:
    old = FakeLink("old")
    router.attach_agent(DEVICE, old)
    console = FakeLink("console")
    late = _forward(router, console, 41, timeout=1)
    new = FakeLink("new")
    router.attach_agent(DEVICE, new)
    _forward(router, console, 42, timeout=60)

    assert router.expire(now=102.0) == [late]
    # abandoned on the old link (a late reply there is dropped quietly), not on the new one
    assert old.session.requests_in_flight == 0
    assert new.session.requests_in_flight == 1
    (request,) = pump(old.session, old.far_end)
    assert isinstance(request, m.DiagnosticsRequest)
    old.far_end.send(_report(request.id))
    assert pump(old.far_end, old.session) == []
    assert router.routes_in_flight == 1


def test_detach_console_abandons_on_the_link_the_request_was_sent_on(
    router: InProcessRouter,
) -> None:
    old = FakeLink("old")
    router.attach_agent(DEVICE, old)
    leaving, staying = FakeLink("leaving"), FakeLink("staying")
    gone = _forward(router, leaving, 41)
    new = FakeLink("new")
    router.attach_agent(DEVICE, new)
    kept = _forward(router, staying, 42)
    gone_too = _forward(router, leaving, 43)

    assert (old.session.requests_in_flight, new.session.requests_in_flight) == (1, 2)
    assert router.detach_console(leaving) == [gone, gone_too]
    assert (old.session.requests_in_flight, new.session.requests_in_flight) == (0, 1)
    assert [rid for rid, _ in new.sent] == [1, 2]
    assert router.deliver(new, _report(1), now=101.0) is kept


def test_forward_to_a_device_without_a_link_is_offline(router: InProcessRouter) -> None:
    with pytest.raises(OfflineError):
        _forward(router, FakeLink("console"), 41)
    assert router.routes_in_flight == 0


# --- requests live as long as their work (docs/protocol.md#requests) ------------------------------


def _run(router: InProcessRouter, console: FakeLink, rid: int, *, timeout: float = 10) -> Route:
    request = m.ScriptRunRequest(
        id=rid, device_id=DEVICE, script="s", version="1", job_id="job_from_console"
    )
    return router.forward(
        console,
        request,
        device_id=DEVICE,
        job_id=f"job_{rid}",
        user="tech",
        now=100.0,
        timeout=timeout,
    )


def _step(rid: int, step: str, **detail: object) -> m.ScriptProgress:
    return m.ScriptProgress(id=rid, job_id="j", step=step, at=1.0, detail=detail)


def test_a_script_request_carries_the_relays_job_id_to_a_v3_agent_only(
    router: InProcessRouter,
) -> None:
    v3 = FakeLink("v3")
    router.attach_agent(DEVICE, v3)
    _run(router, FakeLink("console"), 41)
    ((_, sent),) = v3.sent
    assert sent.job_id == "job_41"  # type: ignore[attr-defined]
    (frame,) = v3.session.data_to_send()
    v3.far_end.receive_data(frame)
    (received,) = v3.far_end.events_received()
    assert received.job_id == "job_41"  # type: ignore[attr-defined]
    old = FakeLink("v2")
    old.far_end, old.session = open_agent_pair(versions=(1, 2))
    router.attach_agent(DEVICE, old)
    _run(router, FakeLink("console"), 42)
    ((_, sent),) = old.sent
    assert sent.job_id is None  # type: ignore[attr-defined]
    diag = _forward(router, FakeLink("console"), 43)
    assert old.sent[-1][1] is not None
    assert diag.tag == "diag.request"


@pytest.mark.parametrize(
    "reply",
    [
        _step(1, "verified"),
        _step(1, "consent_answered"),
        m.ScriptStarted(id=1, job_id="j", started_at=1.0),
        m.ScriptOutput(id=1, job_id="j", seq=0, stream="stdout", data=b""),
    ],
    ids=lambda r: getattr(r, "step", r.TAG),
)
def test_every_reply_moves_the_deadline(router: InProcessRouter, reply: m.Message) -> None:
    router.attach_agent(DEVICE, FakeLink("agent"))
    route = _run(router, FakeLink("console"), 41, timeout=10)
    agent = route.agent
    assert router.deliver(agent, reply, now=108.0) is route
    assert route.deadline == 118.0
    assert router.expire(now=117.0) == []


@pytest.mark.parametrize(
    ("stated", "held"),
    [(120.0, 120.0), (5, 5.0), (10_000.0, 900.0), (-3.0, 0.0), ("soon", 900.0), (None, 900.0)],
)
def test_consent_asked_holds_the_route_for_the_stated_wait_bounded(
    router: InProcessRouter, stated: object, held: float
) -> None:
    router.attach_agent(DEVICE, FakeLink("agent"))
    route = _run(router, FakeLink("console"), 41, timeout=10)
    detail = {} if stated is None else {"timeout": stated}
    router.deliver(route.agent, _step(route.agent_request_id, "consent_asked", **detail), 100.0)
    assert route.deadline == 100.0 + held + 10


def test_an_expired_script_route_is_kept_as_an_orphan_for_its_late_outcome(
    router: InProcessRouter,
) -> None:
    agent = FakeLink("agent")
    router.attach_agent(DEVICE, agent)
    console = FakeLink("console")
    script = _run(router, console, 41, timeout=1)
    diag = _forward(router, console, 42, timeout=1)
    assert router.expire(now=102.0) == [script, diag]
    assert (script.orphaned, diag.orphaned) == (True, False)
    assert (router.routes_in_flight, router.orphans) == (0, 1)
    assert router.expire(now=10_000.0) == []  # expired once
    assert router.detach_console(console) == []  # its console no longer counts
    # the agent's session still expects the script's replies (not abandoned)
    assert agent.session.requests_in_flight == 1
    assert router.deliver(agent, _step(1, "backup_made"), now=103.0) is script
    assert (
        router.deliver(
            agent,
            m.ScriptFinished(id=1, job_id="j", status="succeeded", finished_at=1.0),
            now=104.0,
        )
        is script
    )
    assert router.orphans == 0


def test_orphans_are_bounded_and_go_with_their_agent(router: InProcessRouter) -> None:
    router = InProcessRouter(max_orphans=2)
    agent = FakeLink("agent")
    router.attach_agent(DEVICE, agent)
    console = FakeLink("console")
    routes = [_run(router, console, rid, timeout=1) for rid in (41, 42, 43)]
    router.expire(now=102.0)
    assert router.orphans == 2
    # the oldest was dropped: abandoned, so its late reply is dropped quietly by the session
    assert (
        router.deliver(
            agent, m.ScriptFinished(id=1, job_id="j", status="failed", finished_at=1.0), now=103.0
        )
        is None
    )
    assert router.detach_agent(DEVICE, agent) == routes[1:]
    assert router.orphans == 0


def test_forward_to_a_closing_link_is_offline(router: InProcessRouter) -> None:
    agent = FakeLink("agent")
    router.attach_agent(DEVICE, agent)
    agent.session.close()  # being closed (revoked, replaced, slow): still attached for now
    with pytest.raises(OfflineError):
        _forward(router, FakeLink("console"), 41)
    assert router.routes_in_flight == 0


def test_a_console_leaving_orphans_its_script_routes_and_drops_the_rest(
    router: InProcessRouter,
) -> None:
    agent = FakeLink("agent")
    router.attach_agent(DEVICE, agent)
    console = FakeLink("console")
    script = _run(router, console, 41)
    diag = _forward(router, console, 42)
    assert router.detach_console(console) == [script, diag]
    assert (script.orphaned, diag.orphaned) == (True, False)
    assert (router.routes_in_flight, router.orphans) == (0, 1)
    # the script runs on at the till: its session still expects its replies; the diag's not
    assert agent.session.requests_in_flight == 1
    assert router.expire(now=10_000.0) == []  # an orphan never expires twice
    assert router.deliver(agent, _step(1, "backup_made"), now=103.0) is script
    done = m.ScriptFinished(id=1, job_id="j", status="succeeded", finished_at=1.0)
    assert router.deliver(agent, done, now=104.0) is script
    assert router.orphans == 0


@pytest.mark.parametrize(
    ("stated", "held"),
    [(600, 600.0), (7200.0, 3600.0), (-1, 0.0), ("forever", 3600.0), (None, 3600.0)],
)
def test_the_run_timeout_the_agent_states_holds_the_route_bounded(
    router: InProcessRouter, stated: object, held: float
) -> None:
    router.attach_agent(DEVICE, FakeLink("agent"))
    route = _run(router, FakeLink("console"), 41, timeout=10)
    rid = route.agent_request_id
    router.deliver(route.agent, _step(rid, "verified", run_timeout=stated), now=101.0)
    assert route.deadline == 101.0 + held + 10
    # consent comes before the run: the wait for it, then the run
    router.deliver(route.agent, _step(rid, "consent_asked", timeout=120), now=102.0)
    assert route.deadline == 102.0 + 120 + held + 10
    # the run's clock starts when the script does
    router.deliver(route.agent, m.ScriptStarted(id=rid, job_id="j", started_at=1.0), now=300.0)
    assert route.deadline == 300.0 + held + 10
    assert router.expire(now=300.0 + held + 9.9) == []
    assert router.expire(now=300.0 + held + 10) == [route]


def test_without_a_stated_run_timeout_only_the_request_timeout_holds(
    router: InProcessRouter,
) -> None:
    router.attach_agent(DEVICE, FakeLink("agent"))
    route = _run(router, FakeLink("console"), 41, timeout=10)
    rid = route.agent_request_id
    router.deliver(route.agent, _step(rid, "verified", risk="A"), now=101.0)
    router.deliver(route.agent, m.ScriptStarted(id=rid, job_id="j", started_at=1.0), now=102.0)
    assert route.deadline == 112.0


def test_steps_past_the_audit_cap_are_counted_not_audited() -> None:
    router = InProcessRouter(max_audited_steps=3)
    router.attach_agent(DEVICE, FakeLink("agent"))
    route = _run(router, FakeLink("console"), 41)
    assert [router.audit_step(route) for _ in range(5)] == [True, True, True, False, False]
    assert (route.steps_audited, route.steps_not_audited) == (3, 2)
