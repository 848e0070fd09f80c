"""Model delivery through a real OCI registry (Debian's docker-registry on loopback), measured.

usage: python3 bench/delivery.py EDGELLM_BIN MODEL [KILLS]

1. push the model; 2. plain download of the same bytes as one blob (curl-like GET to a file,
fsync), the same with the blob's sha256 checked on the way, and `edgellm model pull` of the
pushed model, 5 rounds in alternation; 3. KILLS pulls
killed with SIGKILL at random moments (seed 7), then one to completion: the file's sha256, and
that every model file present after a kill is whole; 4. what a one-character change in the chat
template or general.name (metadata only) and a 200 KB change inside a tensor upload and download;
5. with the registry stopped: a running serve's hot activation of the fine-tune under 4 streams
of 800 tokens (streams dropped), and a rollback (time until the server answers with v1).
"""
import hashlib, http.client, json, os, random, signal, socket, statistics, subprocess, sys, tempfile, time

BIN, MODEL = sys.argv[1], sys.argv[2]
KILLS = int(sys.argv[3]) if len(sys.argv) > 3 else 50
ROUNDS = 5
work = tempfile.mkdtemp(prefix="edgellm-delivery-")


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


port = free_port()
open(f"{work}/reg.yml", "w").write(
    f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {work}/data\nhttp:\n  addr: 127.0.0.1:{port}\n")
registry = subprocess.Popen(["docker-registry", "serve", f"{work}/reg.yml"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for _ in range(200):
    try:
        socket.create_connection(("127.0.0.1", port)).close(); break
    except OSError:
        time.sleep(0.05)


def edgellm(home, *args, check=True):
    r = subprocess.run([BIN, *args], env={**os.environ, "EDGELLM_HOME": home}, capture_output=True, text=True)
    if check and r.returncode != 0:
        registry.kill()
        sys.exit(f"edgellm {' '.join(args)}: {r.stderr}")
    return r


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


key = f"{work}/release.key"
edgellm(work, "model", "keygen", key)
pub = key[:-4] + ".pub"
ref = f"127.0.0.1:{port}/fleet/model"
t = time.perf_counter()
pushed = json.loads(edgellm(work, "model", "push", MODEL, ref + ":v1", "--key", key, "--json").stdout)
push_s = time.perf_counter() - t
digest = "sha256:" + pushed["sha256"]
size = pushed["size"]

# The same bytes as one blob.
c = http.client.HTTPConnection("127.0.0.1", port)
c.request("POST", "/v2/fleet/whole/blobs/uploads/"); r = c.getresponse(); r.read()
location = r.getheader("Location")
with open(MODEL, "rb") as f:
    c.request("PUT", location.split(f":{port}", 1)[-1] + "&digest=" + digest, body=f, headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
r = c.getresponse(); r.read(); assert r.status == 201, r.status


def plain_download(verify=False):
    """The blob to a file with fsync; with `verify`, hashed on the way as every OCI client
    (docker, oras, ollama) checks a blob's digest."""
    out = f"{work}/plain.gguf"
    t = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request("GET", f"/v2/fleet/whole/blobs/{digest}")
    r = conn.getresponse()
    h = hashlib.sha256()
    with open(out, "wb") as f:
        while True:
            b = r.read(1 << 20)
            if not b: break
            if verify:
                h.update(b)
            f.write(b)
        f.flush(); os.fsync(f.fileno())
    if verify:
        assert "sha256:" + h.hexdigest() == digest
    spent = time.perf_counter() - t
    os.remove(out)
    return spent


def pull_fresh():
    home = tempfile.mkdtemp(dir=work)
    t = time.perf_counter()
    edgellm(home, "model", "pull", ref + ":v1", "--trusted-key", pub)
    spent = time.perf_counter() - t
    subprocess.run(["rm", "-rf", home])
    return spent


plain, checked, pulls = [], [], []
for _ in range(ROUNDS):
    plain.append(plain_download()); checked.append(plain_download(verify=True)); pulls.append(pull_fresh())
ratios = sorted(p / q for p, q in zip(plain, pulls))
checked_ratios = sorted(p / q for p, q in zip(checked, pulls))


def shaped(mbit):
    """The registry's answers capped at `mbit` Mbit/s (HTB on lo, only packets from the registry's
    port), as a device's WAN link would carry them; the qdisc is removed on the way out."""
    def tc(*args, check=True):
        subprocess.run(["tc", *args], check=check, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tc("qdisc", "del", "dev", "lo", "root", check=False)
    tc("qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "10")
    tc("class", "add", "dev", "lo", "parent", "1:", "classid", "1:10", "htb", "rate", "100gbit")
    tc("class", "add", "dev", "lo", "parent", "1:", "classid", "1:20", "htb", "rate", f"{mbit}mbit", "burst", "1mb")
    tc("filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "u32", "match", "ip", "sport", str(port), "0xffff", "flowid", "1:20")
    return lambda: tc("qdisc", "del", "dev", "lo", "root", check=False)


LINK_MBIT = [int(m) for m in os.environ.get("LINK_MBIT", "").split(",") if m]
links = []
for mbit in LINK_MBIT:
    unshape = shaped(mbit)
    try:
        lp, lc, lq = [], [], []
        for _ in range(3):
            lp.append(plain_download()); lc.append(plain_download(verify=True)); lq.append(pull_fresh())
    finally:
        unshape()
    links.append((mbit, statistics.median(lp), statistics.median(lc), statistics.median(lq),
                  sorted(p / q for p, q in zip(lp, lq))))

# Kills at random moments. A pull that finished before its kill is checked and removed, so
# that the next one starts over.
rng = random.Random(7)
name = os.path.basename(MODEL)
home = f"{work}/killed"
premature, finished = 0, 0
for _ in range(KILLS):
    p = subprocess.Popen([BIN, "model", "pull", ref + ":v1", "--trusted-key", pub], env={**os.environ, "EDGELLM_HOME": home}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(0.02, 0.5))
    p.send_signal(signal.SIGKILL); p.wait()
    for f in os.listdir(f"{home}/models") if os.path.isdir(f"{home}/models") else []:
        if f.endswith(".gguf"):
            finished += 1
            if sha256(f"{home}/models/{f}") != pushed["sha256"]:
                premature += 1
            os.remove(f"{home}/models/{f}"); os.remove(f"{home}/models/{f}.manifest.json")
last = json.loads(edgellm(home, "model", "pull", ref + ":v1", "--trusted-key", pub, "--json").stdout.splitlines()[-1])["pulled"]
killed_ok = sha256(last["path"]) == pushed["sha256"]


def variant(label, change):
    path = f"{work}/{label}-{name}"
    data = bytearray(open(MODEL, "rb").read()); change(data); open(path, "wb").write(data)
    up = json.loads(edgellm(work, "model", "push", path, f"{ref}:{label}", "--key", key, "--base", "v1", "--json").stdout)
    dev = tempfile.mkdtemp(dir=work)
    edgellm(dev, "model", "pull", ref + ":v1", "--trusted-key", pub)
    down = json.loads(edgellm(dev, "model", "pull", f"{ref}:{label}", "--trusted-key", pub, "--json").stdout.splitlines()[-1])["pulled"]
    assert sha256(down["path"]) == sha256(path)
    devices[label] = (dev, down["path"])
    return up["uploaded_bytes"], down["progress"]["fetched_bytes"]


devices = {}


def metadata_char(data):
    """One character of a string value in the header: the chat template, else general.name."""
    for key in (b"tokenizer.chat_template", b"general.name"):
        at = data.find(key)
        if at > 0:
            break
    assert at > 0, "no string key to change"
    value = at + len(key) + 4 + 8  # value type (u32), string length (u64), then the text
    data[value + 2] = ord("x") if data[value + 2] != ord("x") else ord("y")


def tensor_change(data):
    mid = len(data) // 2
    for i in range(mid, mid + 200_000):
        data[i] ^= 0x5A


meta = variant("meta", metadata_char)
tune = variant("tune", tensor_change)
registry.kill()  # the network is down from here on


def props_model(port):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/props")
        return json.loads(c.getresponse().read()).get("model_path")
    except (OSError, ValueError):
        return None


def stream(port, i, out):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = json.dumps({"prompt": f"Maintenance log {i}: the pump", "max_tokens": 800, "ignore_eos": True, "temperature": 0, "stream": True})
    c.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    text = r.read().decode(errors="replace")
    out[i] = (r.status, "data: [DONE]" in text and '"error"' not in text)


def wait_for(port, path, limit=120):
    t = time.perf_counter()
    while props_model(port) != path:
        if time.perf_counter() - t > limit:
            sys.exit(f"serve did not switch to {path}")
        time.sleep(0.02)


# Slots on the device that pulled v1 and the fine-tune, the registry gone: activate v1, serve it,
# activate the fine-tune under 4 streams in flight, then roll back.
import threading
dev, tuned_path = devices["tune"]
v1_path = [f"{dev}/models/{f}" for f in os.listdir(f"{dev}/models") if f.endswith(".gguf") and f"{dev}/models/{f}" != tuned_path][0]
edgellm(dev, "model", "activate", os.path.basename(v1_path))
port = free_port()
serve = subprocess.Popen([BIN, "serve", "--port", str(port), "-t", "2"], env={**os.environ, "EDGELLM_HOME": dev, "EDGELLM_DATA_DIR": dev}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
wait_for(port, v1_path)
results = {}
threads = [threading.Thread(target=stream, args=(port, i, results)) for i in range(4)]
for th in threads:
    th.start()
time.sleep(2)
t = time.perf_counter()
edgellm(dev, "model", "activate", os.path.basename(tuned_path))
wait_for(port, tuned_path)
activation_s = time.perf_counter() - t
in_flight = sum(th.is_alive() for th in threads)
for th in threads:
    th.join()
dropped = sum(1 for ok in results.values() if not (ok[0] == 200 and ok[1])) + (4 - len(results))
t = time.perf_counter()
edgellm(dev, "model", "rollback")
wait_for(port, v1_path)
rollback_s = time.perf_counter() - t
serve.kill()
subprocess.run(["rm", "-rf", work])

print(f"model {name}, {size} bytes, {pushed['chunks']} chunks; push {push_s:.1f} s\n")
print("| measure | value |\n|---|---:|")
print(f"| plain download of the same bytes as one blob, s (median of {ROUNDS}) | {statistics.median(plain):.2f} |")
print(f"| the same with its sha256 checked on the way (as OCI clients do), s (median of {ROUNDS}) | {statistics.median(checked):.2f} |")
print(f"| `edgellm model pull`, s (median of {ROUNDS}) | {statistics.median(pulls):.2f} |")
print(f"| pull throughput / plain download (median; range) | {statistics.median(ratios):.3f} ({ratios[0]:.3f} .. {ratios[-1]:.3f}) |")
print(f"| pull throughput / download with its digest checked (median; range) | {statistics.median(checked_ratios):.3f} ({checked_ratios[0]:.3f} .. {checked_ratios[-1]:.3f}) |")
for mbit, lp, lc, lq, lr in links:
    print(f"| on a {mbit} Mbit/s link (HTB on the registry's answers): plain / checked / pull, s (median of 3) | {lp:.2f} / {lc:.2f} / {lq:.2f} |")
    print(f"| on a {mbit} Mbit/s link: pull throughput / plain download (median; range) | {statistics.median(lr):.3f} ({lr[0]:.3f} .. {lr[-1]:.3f}) |")
print(f"| pulls killed with SIGKILL at random moments | {KILLS} |")
print(f"| pulls that had finished before their kill (file checked, then removed) | {finished} |")
print(f"| model file present and wrong after a kill | {premature} |")
print(f"| final sha256 right after the kills | {'yes' if killed_ok else 'NO'} |")
print(f"| chunks found in the partial file by the final pull | {last['progress']['reused_chunks']} of {last['progress']['chunks']} |")
print(f"| one character of a metadata string changed (the chat template, else general.name): uploaded / downloaded bytes | {meta[0]} / {meta[1]} |")
print(f"| 200 KB changed inside a tensor: uploaded / downloaded bytes | {tune[0]} / {tune[1]} |")
print(f"| activation of the fine-tune in a running serve, `model activate` to the switch, s | {activation_s:.2f} |")
print(f"| streams in flight at the switch / dropped | {in_flight} / {dropped} |")
print(f"| rollback with the registry down, `model rollback` to the switch, s | {rollback_s:.2f} |")
