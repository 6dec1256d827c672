"""What one batch of events hands to another worker travels as one datagram (ipc.Batch), over a
real hand-off socket pair and event loop; the receiving worker takes each item of it in order.
(tests/runtime/test_affinity.py runs hand-offs end to end through running workers.)"""

from types import SimpleNamespace

from pyproxy.kernel import ipc
from pyproxy.kernel.logs import RateLimitedLog
from pyproxy.kernel.loop import EventLoop
from pyproxy.kernel.shm import SharedMemory, Stat
from pyproxy.runtime.handoff import HANDOFF_BATCH, HANDOFF_BATCH_BYTES, HandoffChannel


def channels():
    """Worker 0's channel and worker 1's, on one loop (each worker has its own in a server)."""
    loop, shm = EventLoop(), SharedMemory(1, 2, 16)
    pairs = [ipc.datagram_pair() for _ in range(2)]
    send_socks = [send for _, send in pairs]
    made = [HandoffChannel(n, 2, True, pairs[n][0], send_socks, loop, shm.stats_of(n), RateLimitedLog())
            for n in range(2)]
    return loop, made, pairs


def datagrams(sock) -> list:
    found = []
    while True:
        try:
            found.append(ipc.decode(sock.recv(ipc.MAX_DATAGRAM)))
        except BlockingIOError:
            return found


def send_ons(n: int) -> list[ipc.SendOn]:
    return [ipc.SendOn(7, f"OPTIONS {i}".encode(), "") for i in range(n)]


def in_a_batch(loop, work) -> None:
    """As the event loop runs a batch of events: ``work`` inside it, then the after-batch step."""
    loop.dispatching = True
    work()
    loop.dispatching = False
    for callback in loop.after_batch:
        callback()


def test_the_hand_offs_of_one_batch_of_events_leave_as_one_datagram():
    loop, (first, _), pairs = channels()
    in_a_batch(loop, lambda: [first.hand_off(1, item) for item in send_ons(3)])
    received = datagrams(pairs[1][0])
    assert [type(d) for d in received] == [ipc.Batch]
    assert [ipc.decode(p) for p in received[0].items] == send_ons(3)
    assert first.stats.read()["handoffs_out"] == 3


def test_a_batch_holds_at_most_handoff_batch_items_and_one_alone_goes_as_itself():
    loop, (first, _), pairs = channels()
    in_a_batch(loop, lambda: [first.hand_off(1, item) for item in send_ons(HANDOFF_BATCH + 1)])
    received = datagrams(pairs[1][0])
    assert [type(d) for d in received] == [ipc.Batch, ipc.SendOn]
    assert len(received[0].items) == HANDOFF_BATCH


def test_a_batch_stays_below_handoff_batch_bytes_and_a_big_message_goes_alone():
    loop, (first, _), pairs = channels()
    big = [ipc.SendOn(7, bytes([65 + i]) * 40_000, "") for i in range(5)] + \
        [ipc.SendOn(7, b"B" * (HANDOFF_BATCH_BYTES + 1), "")]
    in_a_batch(loop, lambda: [first.hand_off(1, item) for item in big])
    received = datagrams(pairs[1][0])
    sizes = [len(ipc.encode(d)) for d in received]
    assert all(size <= HANDOFF_BATCH_BYTES + 64 for size in sizes[:-1]), sizes
    items = [ipc.decode(p) for d in received for p in (d.items if type(d) is ipc.Batch else [ipc.encode(d)])]
    assert items == big                         # all of them, in order
    assert type(received[-1]) is ipc.SendOn     # the big one alone


def test_outside_a_batch_of_events_each_hand_off_goes_at_once():
    loop, (first, _), pairs = channels()
    for item in send_ons(2):
        first.hand_off(1, item)
    assert datagrams(pairs[1][0]) == send_ons(2)


def test_the_receiving_worker_takes_each_item_of_a_batch_in_order():
    loop, (first, second), pairs = channels()
    written = []
    conn = SimpleNamespace(peer_ip="127.0.0.1", peer_port=5060)
    second.streams = SimpleNamespace(conns={7: conn}, carries=lambda c, host: True,
                                     write_waiting=lambda c, data, host: written.append(data) or True)
    in_a_batch(loop, lambda: [first.hand_off(1, item) for item in send_ons(3)])
    second.on_readable()
    assert written == [item.data for item in send_ons(3)]
    assert second.stats.read()["handoffs_in"] == 3
    assert second.stats.read()[Stat.SEND_ERRORS.name.lower()] == 0
