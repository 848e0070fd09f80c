"""Held-out evaluation corpus for edgellm's redaction detectors (see redaction-eval.sh).

generate N [SEED]: prints {"text", "expect": [{"category", "value"}], "group"} lines from Faker.
score EVAL FOUND: prints the per-group table (markdown).
cost N [SEED]: prints N texts of 10 KB of each kind (prose, log noise, dense phone lines, dense
    names and addresses), as {"text", "kind"} lines.
costscore TEXTS FOUND: prints p50 / p99 / max of `redact_us` per kind (markdown).
"""
import json
import random
import sys


def luhn_digit(body):
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def generate(n, seed):
    from faker import Faker

    Faker.seed(seed)
    rng = random.Random(seed)
    out = []

    def add(group, text, *expect):
        out.append({"group": group, "text": text,
                    "expect": [{"category": c, "value": v} for c, v in expect]})

    # Phone numbers: each locale's own formats, bare in a log line and after a context word.
    phone_locales = {"en_US": "US", "pt_BR": "BR", "es_ES": "ES", "pl_PL": "PL", "zh_CN": "CN",
                     "es_MX": "MX", "de_DE": "DE", "fr_FR": "FR", "en_GB": "GB", "it_IT": "IT"}
    bare = ["2026-03-02 10:14:07 INFO sms gateway delivered alert to {p} (id 8812)",
            "Customer asked to be called back on {p} after 5pm.",
            "escalation contact {p}; shift lead on duty"]
    context = ["phone: {p}", "Tel: {p}", "tel. {p}", "Mobile: {p}", "WhatsApp {p}", "fax: {p}"]
    for locale, region in phone_locales.items():
        fake = Faker(locale)
        for i in range(n):
            p = fake.phone_number()
            add(f"phone bare {region}", rng.choice(bare).format(p=p), ("phone", p))
            add(f"phone context {region}", rng.choice(context).format(p=p), ("phone", p))
    fake = Faker("en_US")
    # E-mails, plus-addressing included.
    for i in range(n):
        e = fake.email()
        if i % 2:
            user, domain = e.split("@")
            e = f"{user}+{fake.word()}@{domain}"
        add("email", rng.choice(["reply to {e}", "From: {e}", '{{"owner": "{e}"}}']).format(e=e), ("email", e))
    # Serial numbers in the contexts field text uses; shapes from Faker's bothify/hexify.
    for i in range(n):
        kind = i % 6
        if kind == 0:
            v = fake.bothify("???####????", letters="ABCDEFGHJKLMNPQRSTUVWXYZ")
            t = f"S/N: {v}"
        elif kind == 1:
            v = fake.hexify("0x^^^^^^^^", upper=True)
            t = f"board serial={v} rev C"
        elif kind == 2:
            v = fake.bothify("??##-####-##??", letters="ABCDEFGHJKLMNPQRSTUVWXYZ")
            t = f"Serial Number: {v}"
        elif kind == 3:
            v = fake.bothify("#???###", letters="ABCDEFGHJKLMNPQRSTUVWXYZ")
            t = f"Service Tag: {v}"
        elif kind == 4:
            v = fake.bothify("??########", letters="ABCDEFGHJKLMNPQRSTUVWXYZ")
            t = f"sn={v} fw=2.4.1"
        else:
            body = rng.choice(["35", "86", "01", "99"]) + fake.numerify("############")
            v = body + luhn_digit(body)
            t = rng.choice([f"IMEI: {v}", f"modem {v} registered", f"imei={v}"])
        add("serial", t, ("serial", v))
    # Passwords and passphrases in configuration files.
    for i in range(n):
        kind = i % 5
        if kind == 0:
            v = fake.password(length=12, special_chars=False, upper_case=False)
            t = f"db:\n  user: app\n  password: {v}\n"
        elif kind == 1:
            v = fake.password(length=14)
            t = f"DB_PASSWORD={v}\n"
        elif kind == 2:
            v = fake.password(length=10, special_chars=False)
            t = f"[mqtt]\nusername = edge\npassword = {v}\n"
        elif kind == 3:
            v = " ".join(fake.words(4))
            t = f"passphrase: {v}\n"
        else:
            v = fake.password(length=16)
            t = f"export ADMIN_PASS={v}\n"
        add("password", t, ("secret", v))
    # Person names in the places field text names people: a cue word, a salutation, a
    # signature, a title, a key; and bare (nothing but the name says it is one). 10 locales.
    name_context = ["Ticket opened by {n}; operator on site.",
                    "Contact: {n}, shift supervisor",
                    "Hi {n},\nthe pump on line 3 tripped again overnight.",
                    "Thanks for the quick fix.\n\nRegards,\n{n}\nMaintenance",
                    "assignee: {n}\nstatus: open",
                    "Technician {n} replaced the pressure sensor at 14:20.",
                    "Dear {n}, the spare parts arrived this morning.",
                    "Escalated to {n} (night shift)."]
    name_bare = ["{n} replaced the filter on pump 3 and logged the reading.",
                 "Spoke with {n} about the leak near valve 7."]
    for locale in ["en_US", "de_DE", "fr_FR", "es_ES", "pt_BR", "it_IT", "pl_PL", "nl_NL",
                   "en_GB", "es_MX"]:
        f = Faker(locale)
        for i in range(n // 2):
            name = f.name()
            add("person name, context", rng.choice(name_context).format(n=name), ("person", name))
        for i in range(n // 4):
            name = f.name()
            add("person name, bare", rng.choice(name_bare).format(n=name), ("person", name))
    # Postal addresses, one line or several, 7 locales.
    for locale in ["en_US", "de_DE", "fr_FR", "es_ES", "pt_BR", "it_IT", "pl_PL"]:
        f = Faker(locale)
        for i in range(n // 2):
            raw = f.address()
            one = raw.replace("\n", ", ")
            kind = i % 4
            if kind == 0:
                add("postal address", f"Ship the replacement unit to {one}.", ("address", one))
            elif kind == 1:
                add("postal address", f"Site address: {one}", ("address", one))
            elif kind == 2:
                add("postal address", f"Deliver to:\n{raw}\nCall ahead.", ("address", raw))
            else:
                add("postal address", json.dumps({"site": one, "units": 3}, ensure_ascii=False), ("address", one))
    # Noise: log lines, versions, hostnames, product names, sensor readings, digests.
    for i in range(n * 5):
        t = rng.choice([
            lambda: f"{fake.iso8601()} INFO {fake.word()}d v{fake.numerify('#.#.##')} host={fake.hostname()} temp={fake.pyfloat(2, 1, positive=True)}C",
            lambda: f"{fake.catch_phrase()} release {fake.numerify('##.#.#')} for {fake.company()}",
            lambda: f"GET {fake.uri_path()} 200 {fake.random_int(1, 9999)}ms ua={fake.user_agent()}",
            lambda: f"sha1 {fake.sha1()} uuid {fake.uuid4()} file {fake.file_path()}",
            lambda: f"sensor {fake.word()}: {fake.pyfloat(3, 2)} {fake.pyfloat(3, 2)} {fake.pyfloat(3, 2)} rpm {fake.random_int(800, 4000)}",
            lambda: f"order {fake.ean13()} qty {fake.random_int(1, 50)} at {fake.time()}",
            lambda: f"{fake.date()} {fake.time()} kernel: eth0 link up {fake.random_int(10, 1000)}Mbps",
            # Capitalised product, company and component names, places without an address.
            lambda: f"{fake.catch_phrase().title()} module loaded on {fake.hostname()} ({fake.company()})",
            lambda: f"Firmware {fake.numerify('#.#.#')} for {fake.company()} {fake.word().title()} {fake.bothify('??-###', letters='ABCDEFGHJKLMNPQRSTUVWXYZ')} controller",
            lambda: f"Line {fake.random_int(1, 9)} {fake.word().title()} {fake.word().title()} Station: pressure {fake.pyfloat(2, 2, positive=True)} bar",
            lambda: f"Deployed to the {fake.city()} plant, zone {fake.random_int(1, 20)}, rack {fake.random_int(10, 99)}",
            lambda: f"Opened by {fake.user_name()} via {fake.bs().title()} portal, build {fake.random_int(10000, 99999)}",
        ])()
        add("noise", t)
    for line in out:
        print(json.dumps(line, ensure_ascii=False))


def covered(spans, text, value):
    start = text.find(value)
    if start < 0:
        return False
    end = start + len(value)
    # The spans are byte offsets: the value's character offsets in bytes.
    bstart = len(text[:start].encode())
    bend = len(text[:end].encode())
    pos = bstart
    for s, e in sorted(spans):
        if s <= pos < e:
            pos = e
        if pos >= bend:
            return True
    return pos >= bend


def score(eval_path, found_path):
    rows = [json.loads(l) for l in open(eval_path)]
    found = [json.loads(l) for l in open(found_path)]
    assert len(rows) == len(found)
    stats = {}
    for row, got in zip(rows, found):
        group = row["group"]
        s = stats.setdefault(group, {"n": 0, "hit": 0, "fp": 0, "det": 0, "touched": 0})
        dets = got.get("found", [])
        if group == "noise":
            s["n"] += 1
            s["touched"] += bool(dets)
            continue
        for exp in row["expect"]:
            s["n"] += 1
            spans = [(d["start"], d["end"]) for d in dets if d["category"] == exp["category"]]
            s["hit"] += covered(spans, row["text"], exp["value"])
        cats = {e["category"] for e in row["expect"]}
        for d in dets:
            s["det"] += 1
            value_spans = []
            for e in row["expect"]:
                i = row["text"].find(e["value"])
                if i >= 0:
                    bs = len(row["text"][:i].encode())
                    value_spans.append((e["category"], bs, bs + len(e["value"].encode())))
            ok = any(c == d["category"] and d["start"] < e2 and d["end"] > s2 for c, s2, e2 in value_spans)
            s["fp"] += not ok
    print("| group | planted | recall | detections | precision |")
    print("|---|---:|---:|---:|---:|")
    for group in sorted(stats):
        s = stats[group]
        if group == "noise":
            continue
        prec = (s["det"] - s["fp"]) / s["det"] if s["det"] else float("nan")
        print(f"| {group} | {s['n']} | {s['hit'] / s['n']:.3f} | {s['det']} | {prec:.3f} |")
    s = stats["noise"]
    print(f"\nnoise lines touched: {s['touched']} of {s['n']} ({100 * s['touched'] / s['n']:.2f} %)")


def cost(n, seed):
    from faker import Faker
    import io
    import contextlib

    Faker.seed(seed)
    fake = Faker("en_US")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        generate(40, seed)
    lines = [json.loads(l) for l in buf.getvalue().splitlines()]
    by_kind = {
        "prose": lambda: fake.paragraph(nb_sentences=8),
        "log noise": lambda: rng.choice([l for l in lines if l["group"] == "noise"])["text"],
        "dense phone lines": lambda: rng.choice([l for l in lines if l["group"].startswith("phone")])["text"],
        "dense names and addresses": lambda: rng.choice(
            [l for l in lines if l["group"].startswith(("person", "postal"))])["text"],
    }
    rng = random.Random(seed)
    for kind, make in by_kind.items():
        for _ in range(n):
            parts, size = [], 0
            while size < 10_000:
                p = make()
                parts.append(p)
                size += len(p.encode()) + 1
            text = "\n".join(parts)[:10_000]
            print(json.dumps({"text": text, "kind": kind}, ensure_ascii=False))


def costscore(texts_path, found_path):
    rows = [json.loads(l) for l in open(texts_path)]
    found = [json.loads(l) for l in open(found_path)]
    by_kind = {}
    for row, got in zip(rows, found):
        k = by_kind.setdefault(row["kind"], {"us": [], "found": 0})
        k["us"].append(got["redact_us"])
        k["found"] += len(got.get("found", []))
    print("| 10 KB text | texts | findings per text | p50 | p99 | max |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind, k in by_kind.items():
        us = sorted(k["us"])
        p = lambda q: us[min(len(us) - 1, int(q * len(us)))] / 1000
        print(f"| {kind} | {len(us)} | {k['found'] / len(us):.0f} | {p(0.5):.2f} ms | {p(0.99):.2f} ms | {us[-1] / 1000:.2f} ms |")


if __name__ == "__main__":
    if sys.argv[1] == "cost":
        cost(int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 4242)
    elif sys.argv[1] == "costscore":
        costscore(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "generate":
        generate(int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 4242)
    else:
        score(sys.argv[2], sys.argv[3])
