#!/usr/bin/env python3
"""Generates corpus.jsonl, the labelled corpus for edgellm's redaction detectors.

Every secret here is fake: random characters in the documented format of each provider (or
the providers' own documented example values), card numbers built to pass Luhn, IBANs built
to pass mod-97, phone numbers from ranges reserved for fiction (NANP 555-01xx, Ofcom drama
ranges), e-mail domains from RFC 2606, IP addresses from the documentation ranges and private
ranges. The jsonl file is the source of truth; this script is how it was made:

    python3 tests/data/redaction/make_corpus.py > tests/data/redaction/corpus.jsonl

Each line: {"text": ..., "expect": [{"category": ..., "value": ...}, ...]}. `expect` lists every
value that must be redacted in that text (empty for negatives). The corpus test configures one
serial pattern (see `CORPUS_SERIAL_PATTERN` in src/guard/redact/corpus.rs):
    (?i:\\b(?:s/n|sn|serial(?: number| no\\.?)?)[:#]?[ ]*)([A-Z0-9][A-Z0-9-]{6,20}[A-Z0-9])\\b
"""

import base64
import json
import random
import string

rng = random.Random(20240611)
ALNUM = string.ascii_letters + string.digits
B64 = ALNUM + "+/"
B64URL = ALNUM + "-_"
HEX = "0123456789abcdef"
lines = []


def rs(alphabet, n):
    return "".join(rng.choice(alphabet) for _ in range(n))


def mixed(alphabet, n):
    """Random string with at least one upper, lower and digit (like real tokens)."""
    while True:
        s = rs(alphabet, n)
        if any(c.isupper() for c in s) and any(c.islower() for c in s) and any(c.isdigit() for c in s):
            return s


def add(text, *expect):
    lines.append({"text": text, "expect": [{"category": c, "value": v} for c, v in expect]})


def neg(text):
    add(text)


# ---------------------------------------------------------------- api keys
def aws_id():
    return rng.choice(["AKIA", "ASIA"]) + rs(string.ascii_uppercase + "234567", 16)


def api_keys():
    return [
        "AKIAIOSFODNN7EXAMPLE",
        aws_id(),
        aws_id(),
        "ghp_" + mixed(ALNUM, 36),
        "gho_" + mixed(ALNUM, 36),
        "ghs_" + mixed(ALNUM, 36),
        "github_pat_11" + mixed(ALNUM, 20) + "_" + mixed(ALNUM, 59),
        "glpat-" + mixed(ALNUM, 20),
        "xoxb-" + rs(string.digits, 12) + "-" + rs(string.digits, 13) + "-" + mixed(ALNUM, 24),
        "xoxp-" + rs(string.digits, 12) + "-" + rs(string.digits, 12) + "-" + rs(string.digits, 13) + "-" + rs(HEX, 32),
        "sk_live_" + mixed(ALNUM, 24),
        "rk_live_" + mixed(ALNUM, 24),
        "sk-" + mixed(ALNUM, 48),
        "sk-proj-" + mixed(B64URL, 64),
        "sk-ant-api03-" + mixed(B64URL, 93) + "AA",
        "AIza" + mixed(B64URL, 35),
        "SK" + rs(HEX, 32),
        "AC" + rs(HEX, 32),
        "SG." + mixed(B64URL, 22) + "." + mixed(B64URL, 43),
        "npm_" + mixed(ALNUM, 36),
        "hf_" + mixed(ALNUM, 34),
        "gsk_" + mixed(ALNUM, 52),
        "GOCSPX-" + mixed(B64URL, 28),
        "shpat_" + rs(HEX, 32),
        "dop_v1_" + rs(HEX, 64),
    ]


def api_key_lines():
    keys = api_keys()
    forms = [
        "Use {k} for the staging account.",
        "2024-05-02T10:11:12Z WARN upstream rejected credentials {k}",
        '{{"provider": "x", "credential": "{k}"}}',
        "export TOKEN_VALUE=({k})",
        "why does `{k}` give me a 401?",
        "- key: <{k}>,",
    ]
    for i, k in enumerate(keys):
        add(forms[i % len(forms)].format(k=k), ("api_key", k))
    # Keys recognised by the word next to them.
    aws_secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    add("aws_secret_access_key = " + aws_secret, ("api_key", aws_secret))
    s2 = mixed(B64, 40)
    add('{"AccessKeyId": "AKIAIOSFODNN7EXAMPLE", "SecretAccessKey": "' + s2 + '"}',
        ("api_key", "AKIAIOSFODNN7EXAMPLE"), ("api_key", s2))
    s3 = mixed(B64, 86) + "=="
    add("DefaultEndpointsProtocol=https;AccountName=devstore;AccountKey=" + s3 + ";EndpointSuffix=core.windows.net",
        ("api_key", s3))
    h = rs(HEX, 32)
    add("curl -H 'Ocp-Apim-Subscription-Key: " + h + "' https://api.cognitive.example.com", ("api_key", h))
    h2 = rs(HEX, 32)
    add("AZURE_OPENAI_API_KEY=" + h2, ("api_key", h2))
    hook = "T" + rs(string.ascii_uppercase + string.digits, 8) + "/B" + rs(string.ascii_uppercase + string.digits, 8) + "/" + mixed(ALNUM, 24)
    add("post alerts to https://hooks.slack.com/services/" + hook, ("api_key", hook))


# ---------------------------------------------------------------- jwt
def b64u(obj):
    return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).decode().rstrip("=")


def jwt():
    header = b64u({"alg": rng.choice(["HS256", "RS256", "ES256"]), "typ": "JWT"})
    payload = b64u({"sub": str(rng.randint(1000, 99999)), "name": "Test User", "iat": 1716000000 + rng.randint(0, 9999)})
    return header + "." + payload + "." + rs(B64URL, 43)


def jwt_lines():
    forms = [
        "token={t}",
        "Authorization: Bearer {t}",
        '{{"id_token": "{t}", "expires_in": 3600}}',
        "decode this jwt please: {t}",
        "2024-05-02 10:11:12,123 DEBUG auth: verifying {t} for user 1042",
        "Cookie: session={t}; Path=/; HttpOnly",
        "the JWT ({t}) expired",
        "```\n{t}\n```",
    ]
    for f in forms:
        t = jwt()
        add(f.format(t=t), ("jwt", t))
    unsigned = b64u({"alg": "none"}) + "." + b64u({"sub": "42"}) + "."
    add("alg none token " + unsigned + " accepted?", ("jwt", unsigned))


# ---------------------------------------------------------------- auth headers
def auth_lines():
    for f in [
        "Authorization: Bearer {t}",
        "authorization: bearer {t}",
        'curl -H "Authorization: Bearer {t}" https://api.example.com/v1/items',
        '{{"headers": {{"Authorization": "Bearer {t}"}}}}',
        "> GET /v1/me HTTP/1.1\n> Authorization: Token {t}\n> Accept: */*",
        "Proxy-Authorization: Bearer {t}",
        "set the header to Bearer {t} and retry",
    ]:
        t = mixed(B64URL + ".", rng.randint(24, 40))
        add(f.format(t=t), ("auth_header", t))
    for user, pw in [("alice", "wonderland1"), ("svc-backup", "Tr1cky:pass"), ("admin", "admin")]:
        b = base64.b64encode(f"{user}:{pw}".encode()).decode()
        add("Authorization: Basic " + b, ("auth_header", b))
    b = base64.b64encode(b"deploy:K9x!fj2").decode()
    add('requests.get(url, headers={"Authorization": "Basic ' + b + '"})', ("auth_header", b))


# ---------------------------------------------------------------- private keys
def pem(kind):
    body = "\n".join(mixed(B64, 64) for _ in range(rng.randint(4, 8))) + "\n" + rs(B64, 20) + "=="
    return f"-----BEGIN {kind}-----\n{body}\n-----END {kind}-----"


def private_key_lines():
    for kind in ["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "DSA PRIVATE KEY"]:
        k = pem(kind)
        add("here is my key:\n" + k + "\nwhy does ssh reject it?", ("private_key", k))
    k = pem("OPENSSH PRIVATE KEY").replace("\n", "\r\n")
    add(k, ("private_key", k))
    k = pem("PRIVATE KEY")
    add(json.dumps({"type": "service_account", "private_key": k + "\n", "client_email": "svc@proj.iam.example.com"}),
        ("private_key", k.replace("\n", "\\n")), ("email", "svc@proj.iam.example.com"))
    k = pem("PGP PRIVATE KEY BLOCK")
    add("gpg export:\n" + k, ("private_key", k))
    # Truncated paste: no END line; everything key-like after BEGIN goes.
    body = "\n".join(mixed(B64, 64) for _ in range(3))
    k = "-----BEGIN RSA PRIVATE KEY-----\n" + body
    add(k, ("private_key", k))
    # Pasted without the BEGIN line: the body up to its END line, or a DER body on its own.
    k = ("Lx0QnM3rVb8yKp2sT7wZc4dF9hJ6gA1eR5uY0iO3pW8qE2tU7yH4jK9lZ6xC1vB5\n"
         "nM8bV3cX6zL1kJ4hG7fD0sA9pO2iU5yT8rE3wQ6eR1tY4uI7oP0aS3dF6gH9jK2\n"
         "-----END RSA PRIVATE KEY-----")
    add("the key file ends like this:\n" + k, ("private_key", k))
    k = ("MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n"
         "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu")
    add(k, ("private_key", k))


# ---------------------------------------------------------------- url credentials
def url_lines():
    for url, cred in [
        ("postgres://admin:S3cretPass@db.internal:5432/app", "admin:S3cretPass"),
        ("mysql://root:hunter2@10.0.0.12/shop", "root:hunter2"),
        ("redis://:9fJx2kLq@cache.example.net:6379/0", ":9fJx2kLq"),
        ("https://deploy:tok3n-value@git.example.com/org/repo.git", "deploy:tok3n-value"),
        ("amqp://guest:Gu3st!pw@rabbit.example.org:5672/", "guest:Gu3st!pw"),
        ("mongodb+srv://app_user:Zx81%40pw@cluster0.example.mongodb.net/db", "app_user:Zx81%40pw"),
        ("ftp://bob:b0bsecret@ftp.example.com/pub", "bob:b0bsecret"),
        ("smtp://mailer:Ma1ler.pw@smtp.example.com:587", "mailer:Ma1ler.pw"),
    ]:
        extra = [("ipv4", "10.0.0.12")] if "10.0.0.12" in url else []
        add("DATABASE_URL=" + url if "postgres" in url else "connect to " + url + " then run the job", ("url_credentials", cred), *extra)
    add('{"dsn": "postgresql://reporter:R3p0rt-2024@analytics.example.com/warehouse"}', ("url_credentials", "reporter:R3p0rt-2024"))


# ---------------------------------------------------------------- generic secrets
def secret_lines():
    pairs = [
        ("password=hunter2", "hunter2"),
        ("DB_PASSWORD=correcthorsebatterystaple", "correcthorsebatterystaple"),
        ('{"username": "svc", "password": "Pa$$w0rd!"}', "Pa$$w0rd!"),
        ("passwd: s3cr3t-Value", "s3cr3t-Value"),
        ("secret: 'mY-l1ttle-s3cret'", "mY-l1ttle-s3cret"),
        ("client_secret = \"" + mixed(ALNUM, 32) + "\"", None),
        ("api_key=" + mixed(ALNUM, 32), None),
        ("token: " + mixed(ALNUM, 40), None),
        ("X-Api-Key: " + rs(HEX, 40), None),
        ("MYSQL_ROOT_PASSWORD: Tr0ub4dor&3", "Tr0ub4dor&3"),
        ("dbPassword: \"letmein\"", "letmein"),
        ("mysql -u root --password hunter22 shop", "hunter22"),
        ("docker login --password 'Sup3r$ecret' registry.example.com", "Sup3r$ecret"),
        ("GET /api/v1/report?user=7&access_token=" + mixed(ALNUM, 28) + "&fmt=csv", None),
        ("settings.SECRET_KEY = '" + mixed(ALNUM + "!@#%^", 50) + "'", None),
        ("pwd=Xk7#mm2q", "Xk7#mm2q"),
        ("Password: hunter2", "hunter2"),
        ("'password' => 'laravel-Secret1',", "laravel-Secret1"),
        ("auth_token := \"" + mixed(ALNUM, 30) + "\"", None),
        ("[database]\nhost = \"db.example.com\"\nuser = \"app\"\npassword = \"q8Z-rT2v-Lm9\"\n", "q8Z-rT2v-Lm9"),
        ("DATABASE_HOST=db\nDATABASE_PASS=K3ep1tS4fe\nDEBUG=false", "K3ep1tS4fe"),
        ("refresh_token: " + mixed(B64URL, 45), None),
        ("passphrase = \"purple monkey dishwasher\"", "purple monkey dishwasher"),
        ('{"credentials": {"secret_key": "' + mixed(ALNUM, 24) + '"}}', None),
        ("the api key is " + mixed(ALNUM, 32) + ", please rotate it", None),
        ("my deploy token " + mixed(ALNUM, 24) + " stopped working", None),
        ("use secret " + rs(HEX, 40) + " for the webhook signature", None),
        ('tool_call: {"name": "login", "arguments": "{\\"user\\": \\"ann\\", \\"password\\": \\"An0ther!pw\\"}"}', "An0ther!pw"),
        ("db:\n  user: app\n  password: hunter\n", "hunter"),
        ("DB_PASSPHRASE=violet anchor mountain seven\n", "violet anchor mountain seven"),
        ("[mqtt]\npassword = Qz)9fT^2wL\n", "Qz)9fT^2wL"),
    ]
    for text, value in pairs:
        if value is None:
            value = extract_generated(text)
        add(text, ("secret", value))
    sid, csrf = rs(HEX, 32), mixed(ALNUM, 32)
    add("Cookie: sessionid=" + sid + "; csrftoken=" + csrf, ("secret", sid), ("secret", csrf))


def extract_generated(text):
    """The generated random value is the longest token of the line."""
    import re
    tokens = re.findall(r"[A-Za-z0-9!@#%^+/_-]{16,}", text)
    return max(tokens, key=len).strip("'\"")


# ---------------------------------------------------------------- personal data
def luhn_complete(prefix, length):
    digits = prefix + rs(string.digits, length - len(prefix) - 1)
    for check in string.digits:
        n = digits + check
        s = 0
        for i, d in enumerate(reversed(n)):
            v = int(d)
            if i % 2 == 1:
                v *= 2
                if v > 9:
                    v -= 9
            s += v
        if s % 10 == 0:
            return n
    raise AssertionError


def luhn_ok(n):
    s = 0
    for i, d in enumerate(reversed(n)):
        v = int(d)
        if i % 2 == 1:
            v = v * 2 - 9 if v * 2 > 9 else v * 2
        s += v
    return s % 10 == 0


def group4(n, sep):
    return sep.join(n[i:i + 4] for i in range(0, len(n), 4))


def card_lines():
    cards = [
        ("4111111111111111", " "), ("5555555555554444", "-"), ("4012888888881881", ""),
        (luhn_complete("4", 16), " "), (luhn_complete("51", 16), " "), (luhn_complete("2221", 16), "-"),
        (luhn_complete("6011", 16), ""), (luhn_complete("35", 16), " "), (luhn_complete("4", 19), " "),
        (luhn_complete("62", 16), "-"),
    ]
    forms = ["card: {c}", "Payment failed for card {c} (expired)", '{{"pan": "{c}", "exp": "12/27"}}',
             "charge {c}.", "My Visa is {c}, can you check?"]
    for i, (c, sep) in enumerate(cards):
        shown = group4(c, sep) if sep else c
        add(forms[i % len(forms)].format(c=shown), ("card_number", shown))
    amex = "378282246310005"
    add("amex 3782 822463 10005 on file", ("card_number", "3782 822463 10005"))
    add("diners: " + "30569309025904", ("card_number", "30569309025904"))
    add("AMEX " + amex, ("card_number", amex))


def iban_make(country, bban):
    rearranged = bban + country + "00"
    num = int("".join(str(int(c, 36)) for c in rearranged))
    check = 98 - num % 97
    return f"{country}{check:02d}{bban}"


def iban_lines():
    ibans = [
        "DE89370400440532013000", "GB82WEST12345698765432", "FR1420041010050500013M02606",
        iban_make("NL", "ABNA" + rs(string.digits, 10)), iban_make("ES", rs(string.digits, 20)),
        iban_make("IT", "X" + rs(string.digits, 10) + rs(string.digits, 12)), iban_make("CH", rs(string.digits, 17)),
        iban_make("BE", rs(string.digits, 12)), iban_make("NO", rs(string.digits, 11)), iban_make("PL", rs(string.digits, 24)),
        iban_make("AT", rs(string.digits, 16)),
    ]
    forms = ["IBAN: {i}", "please wire EUR 120.00 to {i} by Friday", '{{"iban": "{i}"}}', "Konto {i}.", "refund to ({i})"]
    for n, i in enumerate(ibans):
        shown = group4(i, " ") if n % 2 == 0 else i
        add(forms[n % len(forms)].format(i=shown), ("iban", shown))


def ssn_lines():
    def ssn():
        while True:
            a = rng.randint(1, 899)
            if a != 666:
                return f"{a:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"
    forms = ["SSN: {s}", "applicant ssn {s} verified", '{{"ssn": "{s}"}}', "Social Security Number {s}.", "id={s};"]
    for f in forms:
        s = ssn()
        add(f.format(s=s), ("ssn", s))
    add("SSN 123456789 on the W-2", ("ssn", "123456789"))
    add("social security no. 536 22 1234", ("ssn", "536 22 1234"))


def email_lines():
    emails = ["john.doe@example.com", "a.b-c+tag@mail.example.org", "ADMIN@EXAMPLE.NET", "user_42@sub.domain.example.co.uk",
              "x@example.io", "first.last@example-company.com", "svc-account@proj.iam.example.com", "o'brien@example.com"]
    forms = ["contact {e} for access", "From: Jane <{e}>", '{{"email": "{e}", "active": true}}', "mailto:{e}",
             "2024-05-02 10:11:12 INFO login ok user={e} ip=::1", "(cc: {e}).", "send to: {e};", "<li>{e}</li>"]
    for e, f in zip(emails, forms):
        add(f.format(e=e), ("email", e))
    add("Emails: ann@example.com, bob@example.org and carol@example.net",
        ("email", "ann@example.com"), ("email", "bob@example.org"), ("email", "carol@example.net"))


def phone_lines():
    phones = ["+1 415 555 0132", "+44 20 7946 0958", "+49 30 12345678", "+49 (0)30 1234567", "+33 1 23 45 67 89",
              "+1-415-555-0199", "+14155550123", "+91 98765 43210", "(415) 555-0142", "415-555-0175", "415.555.0110",
              "1-800-555-0199", "020 7946 0018", "07700 900123", "030 12345678", "0151 23456789", "01 23 45 67 89",
              "(030) 1234567", "+61 2 5550 1234", "+81 3-5555-0123", "415 555 0132", "(11) 91234-5678",
              "612 34 56 78"]
    forms = ["call me at {p}", "Tel: {p}", '{{"phone": "{p}"}}', "2024-05-02 10:11:12 INFO sms sent to {p} status=ok",
             "phone {p}.", "mobile: {p}, home: n/a"]
    for i, p in enumerate(phones):
        add(forms[i % len(forms)].format(p=p), ("phone", p))


def ip_lines():
    v4 = ["192.168.1.23", "10.0.0.5", "172.16.4.1", "203.0.113.7", "198.51.100.42", "192.0.2.255", "8.8.8.8", "100.64.12.9"]
    forms = ["ssh into {a} and restart", "Jun 14 15:16:01 host sshd[1234]: Failed password for root from {a} port 52344 ssh2",
             '{{"client_ip": "{a}"}}', "GET http://{a}:8080/health 200", "route {a}/24 via eth0", "peer=({a})",
             "X-Forwarded-For: {a}, 10.1.2.3", "ping {a}."]
    for a, f in zip(v4, forms):
        extra = [("ipv4", "10.1.2.3")] if "10.1.2.3" in f else []
        add(f.format(a=a), ("ipv4", a), *extra)
    v6 = ["2001:db8::1", "2001:0db8:85a3:0000:0000:8a2e:0370:7334", "fe80::1ff:fe23:4567:890a", "2001:db8:abcd:12::",
          "::ffff:192.0.2.128", "2001:db8:0:0:1:0:0:1", "fd12:3456:789a:1::1", "2606:4700:4700::1111"]
    forms6 = ["listen on [{a}]:443", "client {a} connected", '{{"ip": "{a}"}}', "inet6 {a}/64 scope link",
              "from={a};", "ping6 {a}", "src {a} dst 2001:db8::2", "addr: {a}."]
    for a, f in zip(v6, forms6):
        extra = [("ipv6", "2001:db8::2")] if "2001:db8::2" in f else []
        add(f.format(a=a), ("ipv6", a), *extra)


def mac_lines():
    def mac(sep, case):
        m = sep.join(rs(HEX, 2) for _ in range(6))
        return m.upper() if case else m
    forms = ["link/ether {m} brd ff:ff:ff:ff:ff:ff", "device {m} joined", '{{"mac": "{m}"}}', "HWaddr {m}",
             "wlan0: assoc with {m} (try 1/3)", "mac={m},rssi=-61"]
    for i, f in enumerate(forms):
        m = mac(":" if i % 2 == 0 else "-", i % 3 == 0)
        add(f.format(m=m), ("mac_address", m))
    add("switch port learned 0019.e8a2.3c4f", ("mac_address", "0019.e8a2.3c4f"))


def serial_lines():
    for f, s in [("S/N: EDG24A0017X9", "EDG24A0017X9"), ("device serial number RPI4B-0042-XYZ reported overheating", "RPI4B-0042-XYZ"),
                 ('{"sn": "JTX0098812"}', None), ("Serial No. K5Q7W3D1A0 (rev B)", "K5Q7W3D1A0")]:
        if s is None:
            add(f, ("serial", "JTX0098812"))
        else:
            add(f, ("serial", s))
    # Built-in shapes: IMEI (Luhn), hex serials, service tags.
    for f, s in [("IMEI: 35-209900-176148-1", "35-209900-176148-1"), ("modem 490154203237518 registered", "490154203237518"),
                 ("board serial=0x1A2B3C4D rev C", "0x1A2B3C4D"), ("Service Tag: 5CD1234", "5CD1234"),
                 ("sn=XQ40012345 fw=2.4.1", "XQ40012345")]:
        add(f, ("serial", s))


def mixed_lines():
    add("User jane.roe@example.com (ip 192.168.10.4) pasted key AKIAIOSFODNN7EXAMPLE",
        ("email", "jane.roe@example.com"), ("ipv4", "192.168.10.4"), ("api_key", "AKIAIOSFODNN7EXAMPLE"))
    add("ticket: customer +44 20 7946 0321 paid with 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00",
        ("phone", "+44 20 7946 0321"), ("card_number", "4111 1111 1111 1111"), ("iban", "DE89 3704 0044 0532 0130 00"))
    t = jwt()
    add(json.dumps({"messages": [{"role": "user", "content": "my token is " + t + " and mail is kim@example.org"}]}),
        ("jwt", t), ("email", "kim@example.org"))
    g = "ghp_" + mixed(ALNUM, 36)
    add("git clone https://kim:" + g + "@github.com/acme/app.git", ("url_credentials", "kim:" + g))
    add("same address twice: lee@example.com and again lee@example.com", ("email", "lee@example.com"))
    add("Ünïcödé Grüße an müller@example.de — tel +49 89 1234567 ✓", ("email", "müller@example.de"), ("phone", "+49 89 1234567"))


# ---------------------------------------------------------------- negatives
def negatives():
    for t in [
        "2024-05-02T10:11:12.345Z INFO server started in 1.234s",
        "Jun 14 15:16:01 host systemd[1]: Started Session 42 of user root.",
        "ts=1717243871123 level=info msg=\"flush\" took=12ms",
        "epoch 1717243871 -> 2024-06-01 12:11:11 UTC",
        "upgrade from 1.2.3 to v2.0.1-rc1 (build 20240501.3)",
        "Windows 10.0.19041.1415 and kernel 6.8.0-31-generic",
        "request_id=550e8400-e29b-41d4-a716-446655440000 status=200",
        "trace 123e4567-e89b-12d3-a456-426614174000 span 00f067aa0ba902b7",
        "commit 9fceb02d0ae598e95dc970b74767f19372d61af8 (HEAD -> main)",
        "fixed in a3f5c21, reverted in 4be9d10",
        "Order #100045678 shipped, order number 2024-000123, PO-88213",
        "invoice INV-2024-05-0042 total 1,234.56 EUR",
        "0000: 4865 6c6c 6f20 576f 726c 6421 0a00 0000  Hello World!....",
        "00 1a 2b 3c 4d 5e 6f 70 81 92 a3 b4 c5 d6 e7 f8",
        "de:ad:be:ef:00:11:22:33 is the fingerprint prefix",
        "SHA256 fingerprint AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01",
        "took 1h23m45s, p99 latency 00:01:23.456, timeout=30s",
        "temp=23.5C humidity=45.2% pressure=1013.25hPa battery=3.71V",
        "accel: 0.012, -0.998, 9.810 gyro: 0.001 0.002 0.003",
        "listening on 127.0.0.1:8080 and 0.0.0.0:9090",
        "bind [::1]:8443 and [::]:80",
        "netmask 255.255.255.0 broadcast 255.255.255.255",
        "version 1.2.3.4 released; see v10.0.0.1 notes",
        "address 999.10.1.1 and 1.2.3.4.5 are not addresses",
        "std::vector<int> and a::b and Foo::bar::baz",
        "time 12:34:56 and 10:22:31.123",
        "MAC placeholder 00:00:00:00:00:00 and ff:ff:ff:ff:ff:ff",
        "aa:bb:cc:dd:ee has only five groups; 00:1a:2b:3c:4d:5e:6f has seven",
        "card 4111 1111 1111 1112 failed Luhn",
        "number 1234 5678 9012 3456 is a test pattern",
        "ref 4539-1488-0343-6468-1 mixed",
        "IBAN DE89 3704 0044 0532 0130 01 has a bad checksum",
        "IBAN XX82 WEST 1234 5698 7654 32 unknown country",
        "GB82 WEST 1234 5698 7654 3 is too short",
        "SSN 000-12-3456 is invalid, so is 666-12-3456",
        "SSN 912-34-5678 (ITIN range), 123-00-4567 and 123-45-0000",
        "the Woolworth card 078-05-1120 is famous",
        "logo@2x.png and icon@3x.svg",
        "git@github.com:acme/app.git",
        "npm i react@18.2.0 lodash@4.17.21",
        "ping me @alice or user@localhost",
        "ISBN 978-3-16-148410-0, zip 94103-1234",
        "port 8080, PID 31337, uid 1000, errno -13",
        "The password must be at least 8 characters long.",
        "Password: must contain a digit",
        "Token: the smallest unit of text a model reads",
        "max_tokens: 256, temperature: 0.7, top_p=0.9",
        "token_count=1834 prompt_tokens=1200 completion_tokens=634",
        "password_min_length = 12",
        "passwordless login via magic link",
        "secret_name: db-credentials",
        "{\"token\": null, \"password\": \"\", \"api_key\": \"${API_KEY}\"}",
        "password=******** and token=<redacted>",
        "export OPENAI_API_KEY=$OPENAI_API_KEY",
        "api_key: YOUR_API_KEY_HERE",
        "use a key like sk-... from the dashboard",
        "scikit-learn, task-runner and disk-usage-analyzer-tool",
        "hf_hub_download(repo_id, filename) and ghp_ prefix docs",
        "AKIA is the prefix of AWS access key ids",
        "Bearer tokens are sent in the Authorization header",
        "Authorization: Bearer $TOKEN",
        "bearer of good news",
        "https://example.com/path?query=1#frag and ftp://ftp.example.com/pub/",
        "http://localhost:3000/api/v1/items?page=2",
        "build 2024.03.15, release 24.04 LTS",
        "call extension 4412 or room 0815",
        "dimensions 1920x1080, 60 Hz, 3840 x 2160",
        "lat 52.520008, lon 13.404954, alt 34.0 m",
        "price: $1,299.00, qty 3, sku ABC-12345-XL",
        "cron 0 */5 * * * and chmod 0755",
        "error code 0x80070005 at 0x7ffd5fbff8c8",
        "rgba(255, 255, 255, 0.5) and #ff8800",
        "sensor 0x1A readings: 512 634 1024 2048",
        "date 05/12/2023 and 2023-12-05 and 12.05.2023",
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "docker image nginx@sha256:0b970013351304af46f322da1263516b188318682b2ab1091862497591189ff1",
        "uuid 6ba7b810-9dad-11d1-80b4-00c04fd430c8 in the namespace",
        "checksum 5d41402abc4b2a76b9719d911017c592 matches",
        "ULID 01ARZ3NDEKTSV4RRFFQ69G5FAV assigned",
        "phone numbers look like +1 (555) ... but this is prose",
        "The key insight is that caching helps",
        "primary key (id), foreign key order_id references orders",
        "keyboard shortcut Ctrl+Shift+P, monkey patching",
        "Use the secret santa spreadsheet",
        "press 1-2-3 to continue, then 4-5-6",
        "RFC 3339 and ISO 8601: 2024-05-02T10:11:12+02:00",
        "IPv4 10.0.0 is incomplete and 10.0.0.0.1 is too long",
        "sizes: 12.3 KB, 4.5 MB, 1.2 GB; ratio 1:2:3",
        # Digit groups no region writes a phone number in stay. A 3-3-4 group is a phone
        # number (US, Mexico) and is redacted, spaces or not.
        "the function returns 415 5550 132 as integers",
        "dead::beef and cafe::babe are not addresses",
        "matrix row: 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8",
        "serial port /dev/ttyUSB0 at 115200 baud",
        "Model: Llama-3.2-1B-Instruct-Q4_K_M.gguf, n_ctx=4096",
        "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-5f1e2a3b-1c2d-4e5f-8a9b-0c1d2e3f4a5b)",
        "latency histogram: 10ms 20ms 50ms 100ms 200ms 500ms",
        "Kubernetes pod web-7d4b9c8f6-x2k9p restarted",
        "S3 bucket arn:aws:s3:::my-bucket/logs/2024/05/02/",
        "AWS region us-east-1, account 123456789012",
        "password reset link sent",
        "Set token_limit: 4096 in the config",
        "the auth: none option disables login",
        "Enter your password:",
        "tokens: 42",
        "apikey is configured via env",
        "A 16-digit number 1700000000000000 from the clock",
        "Luhn-valid but unknown prefix 8000000000000002",
        "hex dump 0x00000010: 00 11 22 33 44 55 66 77",
        "v1.0.0-beta.2+exp.sha.5114f85",
        "python 3.12.1, node v20.11.0, rustc 1.79.0",
        "coordinates (12, 34, 56, 78, 90, 12)",
        "call +1 or press 0",
        "1-800-FLOWERS is a vanity number",
        "bytes 0-1023/146515",
        "user_id: 48213, session: 7, retries: 3",
        "[2024-05-02 10:11:12] worker-3 processed 1000 jobs in 12.5s",
        "{\"level\":\"debug\",\"ts\":1717243871.123,\"caller\":\"main.go:42\",\"msg\":\"ok\"}",
        "W/\"33a64df551425fcc55e4d42a148795d9f25f89d4\" is the ETag",
        "the AKIAIOSFODNN7EXAMPL prefix is one char short",
        "ghp_abc is truncated",
    ]:
        neg(t)


# ---------------------------------------------------------------- people and places
def person_lines():
    # Invented people in the places tickets and mails name them.
    for t, v in [
        ("Ticket opened by Odalys Brennecke; on site at 09:00.", "Odalys Brennecke"),
        ("Contact: Tamsin Okonkwo-Reyes, plant safety", "Tamsin Okonkwo-Reyes"),
        ("Hi Henrike,\nthe compressor alarm is back.", "Henrike"),
        ("Best regards,\nQuirin van der Haegen\nField Service", "Quirin van der Haegen"),
        ("assignee: Marisol Etxeberria", "Marisol Etxeberria"),
        ("Technician Bartholomew J. Quist swapped the relay.", "Bartholomew J. Quist"),
        ("Dr. Ysolde Ferrand approved the change.", "Dr. Ysolde Ferrand"),
        ("Sehr geehrte Frau Wendelgard Oberhauser,", "Frau Wendelgard Oberhauser"),
        ("Bonjour Mme Clémence Aubertin-Lacaze, la pièce est arrivée.", "Mme Clémence Aubertin-Lacaze"),
        ("Técnico: Evaristo Quiñones Albarrán", "Evaristo Quiñones Albarrán"),
        ("Chamado aberto por Iraci dos Santos Pimentel.", "Iraci dos Santos Pimentel"),
        ("Dott. Gualtiero Sbarbaro ha firmato il verbale.", "Dott. Gualtiero Sbarbaro"),
        ("Zgłoszenie od pan Zdzisław Wróblewicz", "pan Zdzisław Wróblewicz"),
        ("Anna Kowalczyk replaced the filter on line 2.", "Anna Kowalczyk"),
        ("Yesterday Maarten Oosterhuis calibrated the flow meter.", "Maarten Oosterhuis"),
        ("Escalated to Mr Desmond O'Halloran (night shift).", "Mr Desmond O'Halloran"),
        ("Reported by Giuseppe De Santis-Romano, operatore", "Giuseppe De Santis-Romano"),
        ('{"technician": "Ximena Altamirano", "hours": 3}', "Ximena Altamirano"),
    ]:
        add(t, ("person", v))


def address_lines():
    # Invented addresses in each layout the scanner reads.
    for t, v in [
        ("Ship the spare to 4417 Larkspur Hollow Apt. 12, Quellmont, OR 97381.", "4417 Larkspur Hollow Apt. 12, Quellmont, OR 97381"),
        ("Site address: Brunhildenweg 23a, 71364 Winnenden", "Brunhildenweg 23a, 71364 Winnenden"),
        ("Livraison: 14, rue des Tanneurs, 67000 Strasbourg", "14, rue des Tanneurs, 67000 Strasbourg"),
        ("Enviar a Calle del Olivar 58, 2º B, Zaragoza, 50001", "Calle del Olivar 58, 2º B, Zaragoza, 50001"),
        ("Entregar em Rua das Acácias, 310, Jardim América, 13087-540 Campinas / SP", "Rua das Acácias, 310, Jardim América, 13087-540 Campinas / SP"),
        ("Spedire a Via dei Mille, 21, 40121, Bologna (BO)", "Via dei Mille, 21, 40121, Bologna (BO)"),
        ("Adres: ul. Krucza 17/4, 00-525 Warszawa", "ul. Krucza 17/4, 00-525 Warszawa"),
        ("Deliver to:\n88 Wexford Lane\nDunmore, PA 18512\nCall ahead.", "88 Wexford Lane\nDunmore, PA 18512"),
        ('{"site": "Kanaalweg 5, 3526 KL, Utrecht"}', "Kanaalweg 5, 3526 KL, Utrecht"),
        ("Return it to 27 Holloway Road, Islington, N7 8JG please", "27 Holloway Road, Islington, N7 8JG"),
    ]:
        add(t, ("address", v))


def people_and_places_negatives():
    for t in [
        "Powered by Home Assistant and Node-RED on a Raspberry Pi",
        "Contact Support if the Gateway Service does not start",
        "Hello World from the Edge Runtime",
        "Monday Night Maintenance Window starts at 22:00",
        "Siemens SIMATIC S7-1500 CPU 1516-3 restarted after update",
        "Deployed to the Springfield plant, zone 12, rack 40",
        "Order 12345 shipped in 3 boxes, tracking 1Z999AA10123456784",
        "Pump Station North reported 4.2 bar at 12345 rpm",
        "Version 12345 of the Data Logger, build 2024",
        "Made by Bosch Rexroth, sold by Acme Industrial Supply",
    ]:
        neg(t)


api_key_lines()
jwt_lines()
auth_lines()
private_key_lines()
url_lines()
secret_lines()
card_lines()
iban_lines()
ssn_lines()
email_lines()
phone_lines()
ip_lines()
mac_lines()
serial_lines()
mixed_lines()
negatives()
person_lines()
address_lines()
people_and_places_negatives()

# Sanity checks on the generator itself.
for line in lines:
    for e in line["expect"]:
        assert e["value"] in line["text"] or "\\n" in e["value"], (line, e)
for line in lines:
    print(json.dumps(line, ensure_ascii=False))
