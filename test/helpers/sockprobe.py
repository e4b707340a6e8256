#!/usr/bin/env python3
# Syscall-level socket probes for the adversarial tests (run inside sandbox
# pods): one connection the way an app would make it, printed as one JSON line
#   {"ok": true, "peer": [...], "got": "..."}  or  {"ok": false, "error": "EPERM"}
#
#   sockprobe.py MODE HOST PORT [PAYLOAD]
#   MODE: v4        AF_INET connect()
#         v6mapped  AF_INET6 socket, connect() to ::ffff:HOST (dual-stack, Java/.NET default)
#         v6        AF_INET6 connect() to a native IPv6 HOST
#         tfo       sendto(MSG_FASTOPEN) on an unconnected AF_INET socket (no connect())
#         tfo6      the same on an AF_INET6 socket to ::ffff:HOST
#         nonblock  non-blocking connect(), then poll for completion
#         mptcp     socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP)
# Reads what the server says first (a --greet server), sends PAYLOAD, reads
# until PAYLOAD comes back (echo) or 5 s pass.
import errno, json, select, socket, sys, time

mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
payload = (sys.argv[4] if len(sys.argv) > 4 else 'probe').encode()
IPPROTO_MPTCP = 262


def out(**kw):
    print(json.dumps(kw), flush=True)


def name(e):
    return errno.errorcode.get(e.errno, str(e.errno)) if isinstance(e, OSError) and e.errno else type(e).__name__


try:
    sent_first = False
    if mode == 'v4':
        s = socket.socket(); s.settimeout(5); s.connect((host, port))
    elif mode == 'v6mapped':
        s = socket.socket(socket.AF_INET6); s.settimeout(5); s.connect(('::ffff:' + host, port))
    elif mode == 'v6':
        s = socket.socket(socket.AF_INET6); s.settimeout(5); s.connect((host, port))
    elif mode == 'tfo':
        s = socket.socket(); s.sendto(payload, socket.MSG_FASTOPEN, (host, port)); s.settimeout(5); sent_first = True
    elif mode == 'tfo6':
        s = socket.socket(socket.AF_INET6); s.sendto(payload, socket.MSG_FASTOPEN, ('::ffff:' + host, port)); s.settimeout(5); sent_first = True
    elif mode == 'nonblock':
        s = socket.socket(); s.setblocking(False)
        try:
            s.connect((host, port))
        except BlockingIOError:
            pass
        select.select([], [s], [], 5)
        e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if e:
            raise OSError(e, errno.errorcode.get(e, str(e)))
        s.setblocking(True); s.settimeout(5)
    elif mode == 'mptcp':
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP); s.settimeout(5); s.connect((host, port))
    else:
        out(ok=False, error='usage'); sys.exit(2)
    peer = list(s.getpeername())[:2]
    if not sent_first:
        s.sendall(payload)
    got = b''
    end = time.time() + 5
    while payload not in got and time.time() < end:
        c = s.recv(65536)
        if not c:
            break
        got += c
    s.close()
    out(ok=payload in got, peer=peer, got=got.decode(errors='replace'))
except Exception as e:  # noqa: BLE001 - every failure is the answer
    out(ok=False, error=name(e), message=str(e))
