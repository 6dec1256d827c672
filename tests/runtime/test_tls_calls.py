"""sipp calls over TLS through pyproxy. Debian's sipp has no TLS, so each TLS leg is sipp's TCP
wrapped in stunnel (as ../shared/bench does): the proxy sees real TLS from a real peer.

  UAC -TCP-> stunnel client -TLS-> pyproxy -UDP-> UAS
  UAC -UDP-> pyproxy -TLS-> stunnel server -TCP-> UAS
"""

import shutil
import subprocess
import time


from ._harness import LOOP, free_port, port_in_use, run_uac, start_uas

CALLS, RATE = 200, 50


def stunnel(reaper, folder, side, accept_port, connect_port, pki):
    binary = shutil.which("stunnel4") or shutil.which("stunnel")
    assert binary, "stunnel is not installed: apt-get install -y stunnel4"
    cert = pki / ("client.example.com" if side == "client" else "localhost")
    conf = folder / f"stunnel_{side}.conf"
    conf.write_text("foreground = yes\npid =\nsyslog = no\ndebug = notice\n"
                    f"[{side}]\nclient = {'yes' if side == 'client' else 'no'}\n"
                    f"accept = {LOOP}:{accept_port}\nconnect = {LOOP}:{connect_port}\n"
                    f"cert = {cert}/cert.pem\nkey = {cert}/privkey.pem\nverifyChain = no\n")
    log = open(folder / f"stunnel_{side}.log", "wb")
    p = reaper.popen([binary, str(conf)], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + 5
    while not port_in_use(accept_port, 1):
        assert p.poll() is None and time.monotonic() < deadline, (folder / f"stunnel_{side}.log").read_text()
        time.sleep(0.05)
    return p


def tls_extra(pki, port):
    return (f"disable_tls=no\nlisten=tls:{LOOP}:{port}\n"
            f'tls_certificate="{pki}/localhost/cert.pem"\ntls_private_key="{pki}/localhost/privkey.pem"\n'
            f'tls_ca_list="{pki}/ca/cacert.pem"\ntls_verify_client=1\ntls_require_client_certificate=0\n')


def test_calls_from_a_tls_client_to_a_udp_server(sipp, reaper, proxy_factory, tmp_path, pki):
    tls_port, tunnel_port = free_port(), free_port()
    proxy = proxy_factory(children=2, extra=tls_extra(pki, tls_port))
    stunnel(reaper, tmp_path, "client", tunnel_port, tls_port, pki)
    _, uas_port = start_uas(reaper, tmp_path, "udp")
    r = run_uac(reaper, tmp_path, tunnel_port, uas_port, "tcp", CALLS, RATE, tp="TLS", uas_tp="udp")
    assert r.created == CALLS and r.successful == CALLS and r.failed == 0, f"{r.describe()}\n{proxy.tail()}"


def test_calls_from_a_udp_client_to_a_tls_server(sipp, reaper, proxy_factory, tmp_path, pki):
    tls_port, tunnel_port = free_port(), free_port()
    proxy = proxy_factory(children=2, extra=tls_extra(pki, tls_port))
    _, backend = start_uas(reaper, tmp_path, "tcp", tp="TLS", contact_port=tunnel_port)
    stunnel(reaper, tmp_path, "server", tunnel_port, backend, pki)
    r = run_uac(reaper, tmp_path, proxy.port, tunnel_port, "udp", CALLS, RATE, uas_tp="tls")
    assert r.created == CALLS and r.successful == CALLS and r.failed == 0, f"{r.describe()}\n{proxy.tail()}"
