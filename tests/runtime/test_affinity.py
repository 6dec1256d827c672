"""Call-ID affinity: every message of a call (INVITE, ACK, BYE and their replies) is processed by
one worker, crc32(Call-ID) % children (numbered from 1 in the titles), whichever worker received
it. Read from the workers' debug lines
`worker K[pid] DEBUG: processing request|reply X Call-ID C from proto:ip:port`."""

import time
import uuid
from collections import defaultdict

from ._harness import owner, run_uac, start_uas

CHILDREN, CALLS = 4, 40


def test_each_call_id_is_processed_by_its_owner_worker(sipp, reaper, proxy_factory, tmp_path):
    proxy = proxy_factory(children=CHILDREN)
    _, uas_port = start_uas(reaper, tmp_path, "udp")
    prefix = f"aff{uuid.uuid4().hex[:8]}"
    call_ids = {f"{prefix}-{n}@127.0.0.1" for n in range(1, CALLS + 1)}  # sipp -cid_str PREFIX-%u@%s
    assert {owner(c, CHILDREN) for c in call_ids} == set(range(1, CHILDREN + 1))

    r = run_uac(reaper, tmp_path, proxy.port, uas_port, "udp", CALLS, 20, cid_prefix=prefix)
    assert (r.rc, r.successful, r.failed) == (0, CALLS, 0), f"{r.describe()}\n{proxy.tail()}"
    time.sleep(0.5)  # the last BYE's 200 is relayed before sipp ends; let its log line be written

    workers = proxy.workers()
    by_call = defaultdict(set)      # Call-ID -> {worker number}
    seen = defaultdict(set)         # Call-ID -> {"request INVITE", "reply 200", ...}
    for m in proxy.processing():
        k, cid = int(m["worker"]), m["callid"]
        by_call[cid].add(k)
        seen[cid].add(f"{m['kind']} {m['what']}")
        assert workers.get(k) == int(m["pid"]), \
            f"log line names worker {k} pid {m['pid']}, but the process titled 'pyproxy: worker {k}' " \
            f"is {workers.get(k)}: {m.group(0)}"

    missing = call_ids - by_call.keys()
    assert not missing, f"no 'processing' debug line for {len(missing)} calls, e.g. {sorted(missing)[:3]}\n" \
                        + proxy.tail()
    wrong = {c: sorted(ks) for c, ks in by_call.items() if ks != {owner(c, CHILDREN)}}
    assert not wrong, ("Call-IDs processed by another worker than crc32 % 4 + 1 (or by several): "
                       + ", ".join(f"{c} by {ks} (owner {owner(c, CHILDREN)})" for c, ks in list(wrong.items())[:8]))
    for c in call_ids:
        assert {"request INVITE", "request ACK", "request BYE", "reply 200"} <= seen[c], (c, sorted(seen[c]))
