#!/usr/bin/env python3
# A page that reads the live flow at 4 KB/s through a small socket buffer:
# it falls behind a load run, and should be told how much it missed.
import socket, sys, time, re
cookie = open(sys.argv[1]).read().split("console_session")[1].split()[0]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", 8088))
s.sendall(f"GET /api/events/live HTTP/1.1\r\nHost: 127.0.0.1:8088\r\nCookie: console_session={cookie}\r\n\r\n".encode())
data = b""; end = time.time() + float(sys.argv[2])
while time.time() < end:
    chunk = s.recv(1024)
    if not chunk: break
    data += chunk
    time.sleep(0.25)
# then read fast for a while: what is queued, and the drop notice
s.settimeout(3)
stop = time.time() + 10
try:
    while time.time() < stop:
        chunk = s.recv(65536)
        if not chunk: break
        data += chunk
except socket.timeout:
    pass
text = data.decode("utf-8", "replace")
records = text.count("event: record")
dropped = sum(int(x) for x in re.findall(r'"dropped":(\d+)', text))
print(f"slow page: {records} records received, {dropped} reported dropped")
