//! Table-driven tests: each detector, numbering, restore (whole and streamed), policies,
//! configuration errors, fault injection. The corpus-wide precision/recall is in `corpus.rs`.

use std::collections::BTreeMap;

use super::*;

fn redactor(config: RedactionConfig) -> Redactor {
    Redactor::new(&config).unwrap()
}

fn default_redactor() -> Redactor {
    redactor(RedactionConfig::default())
}

/// (category, value) of every detection in `text`, in order.
fn found(r: &Redactor, text: &str) -> Vec<(String, String)> {
    r.detect(text)
        .unwrap()
        .into_iter()
        .map(|c| {
            (
                r.inner.categories[c.category].name.clone(),
                text[c.span].to_string(),
            )
        })
        .collect()
}

#[test]
fn each_detector_finds_its_formats() {
    let r = redactor(RedactionConfig {
        serial_patterns: vec![r"\bSN-([A-Z0-9]{8})\b".into()],
        ..Default::default()
    });
    let cases: &[(&str, &str, &str)] = &[
        (
            "key AKIAIOSFODNN7EXAMPLE.",
            "api_key",
            "AKIAIOSFODNN7EXAMPLE",
        ),
        (
            "gh ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5 ok",
            "api_key",
            "ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5",
        ),
        (
            "glpat-Ab3De5Gh7Jk9Mn1Pq3St",
            "api_key",
            "glpat-Ab3De5Gh7Jk9Mn1Pq3St",
        ),
        (
            "xoxb-123456789012-1234567890123-AbCdEf123456GhIjKl789012",
            "api_key",
            "xoxb-123456789012-1234567890123-AbCdEf123456GhIjKl789012",
        ),
        (
            "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            "api_key",
            "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        ),
        (
            "OPENAI=sk-proj-Ab3De5Gh7Jk9Mn1Pq3St5Vw7Yz9Bc1De3Fg",
            "api_key",
            "sk-proj-Ab3De5Gh7Jk9Mn1Pq3St5Vw7Yz9Bc1De3Fg",
        ),
        (
            "sk-ant-api03-Ab3De5Gh7Jk9Mn1Pq3St5Vw7Yz9Bc1De3Fg-xyz",
            "api_key",
            "sk-ant-api03-Ab3De5Gh7Jk9Mn1Pq3St5Vw7Yz9Bc1De3Fg-xyz",
        ),
        (
            "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
            "api_key",
            "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
        ),
        (
            "SG.Ab3De5Gh7Jk9Mn1Pq3St5V.Ab3De5Gh7Jk9Mn1Pq3St5Vw7Yz9Bc1De3Fg5Hj7Kl9M",
            "api_key",
            "SG.Ab3De5Gh7Jk9Mn1Pq3St5V.Ab3De5Gh7Jk9Mn1Pq3St5Vw7Yz9Bc1De3Fg5Hj7Kl9M",
        ),
        (
            "npm_Ab3De5Gh7Jk9Mn1Pq3St5Vw7Yz9Bc1De3Fg5",
            "api_key",
            "npm_Ab3De5Gh7Jk9Mn1Pq3St5Vw7Yz9Bc1De3Fg5",
        ),
        (
            "hf_Ab3De5Gh7Jk9Mn1Pq3St5Vw7Yz9Bc1De3F",
            "api_key",
            "hf_Ab3De5Gh7Jk9Mn1Pq3St5Vw7Yz9Bc1De3F",
        ),
        (
            "SK0123456789abcdef0123456789abcdef",
            "api_key",
            "SK0123456789abcdef0123456789abcdef",
        ),
        (
            "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "api_key",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        (
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlX2hlcmU",
            "jwt",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlX2hlcmU",
        ),
        (
            "Authorization: Bearer abc.DEF-123_xyz~9",
            "auth_header",
            "abc.DEF-123_xyz~9",
        ),
        (
            "Authorization: Basic YWxpY2U6c2VjcmV0",
            "auth_header",
            "YWxpY2U6c2VjcmV0",
        ),
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----",
            "private_key",
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----",
        ),
        (
            "postgres://app:pa55word@db.example.com/x",
            "url_credentials",
            "app:pa55word",
        ),
        ("password=hunter2", "secret", "hunter2"),
        (
            r#"{"password": "correct horse"}"#,
            "secret",
            "correct horse",
        ),
        ("passwd: s3cr3t", "secret", "s3cr3t"),
        ("api_key=Ab3De5Gh7Jk9Mn1P", "secret", "Ab3De5Gh7Jk9Mn1P"),
        (
            "my token is Ab3De5Gh7Jk9Mn1Pq3St",
            "secret",
            "Ab3De5Gh7Jk9Mn1Pq3St",
        ),
        (
            "mail Ann.Lee+x@mail.example.org.",
            "email",
            "Ann.Lee+x@mail.example.org",
        ),
        ("call +1 415 555 0132", "phone", "+1 415 555 0132"),
        ("call (415) 555-0132", "phone", "(415) 555-0132"),
        ("call 020 7946 0958", "phone", "020 7946 0958"),
        ("from 192.168.1.20:22", "ipv4", "192.168.1.20"),
        ("from [2001:db8::7]:443", "ipv6", "2001:db8::7"),
        ("hw 3c:22:fb:0a:1b:2c", "mac_address", "3c:22:fb:0a:1b:2c"),
        (
            "card 4111-1111-1111-1111",
            "card_number",
            "4111-1111-1111-1111",
        ),
        (
            "iban GB82 WEST 1234 5698 7654 32",
            "iban",
            "GB82 WEST 1234 5698 7654 32",
        ),
        ("ssn 536-22-1234", "ssn", "536-22-1234"),
        ("device SN-AB12CD34", "serial", "AB12CD34"),
    ];
    for (text, category, value) in cases {
        assert_eq!(
            found(&r, text),
            vec![(category.to_string(), value.to_string())],
            "text: {text:?}"
        );
    }
}

#[test]
fn lookalikes_are_left_alone() {
    let r = default_redactor();
    let cases = [
        "2024-05-02T10:11:12.345Z started; epoch 1717243871123",
        "v2.0.1-rc1 and 1.2.3 and version 1.2.3.4",
        "550e8400-e29b-41d4-a716-446655440000",
        "commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
        "127.0.0.1 0.0.0.0 ::1 :: 255.255.255.0",
        "12:34:56 and 00:00:00:00:00:00 and ff:ff:ff:ff:ff:ff",
        "4111 1111 1111 1112",
        "DE89 3704 0044 0532 0130 01",
        "000-12-3456 666-12-3456 912-34-5678 123-00-4567 123-45-0000",
        "logo@2x.png git@github.com:a/b.git",
        "max_tokens: 256 Password: must be long",
        "std::vector a::b dead::beef",
        "<EMAIL_1> and <API_KEY_2> are placeholders",
        "password=<SECRET_1>",
        // Readings after a word that also names a phone (a load cell).
        "load cell: 930.94 -676.12 595.27 rpm 1636",
    ];
    for text in cases {
        assert_eq!(found(&r, text), vec![], "text: {text:?}");
    }
}

#[test]
fn serials_passwords_and_bare_key_bodies_are_built_in() {
    let r = default_redactor();
    let key_body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\nMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\nNMoSfm76oqFvAp8Gy0iz5sxjZmSnXyCdPEovGhLa0VzMaQ8s+CLOyS56YyCFGeJZ";
    let cases: &[(&str, &[(&str, &str)])] = &[
        (
            "IMEI: 35-209900-176148-1",
            &[("serial", "35-209900-176148-1")],
        ),
        (
            "imei 490154203237518 seen",
            &[("serial", "490154203237518")],
        ),
        ("IMEISV 3520990017614823", &[("serial", "3520990017614823")]),
        (
            "modem 352099001761481 online",
            &[("serial", "352099001761481")],
        ),
        ("S/N: FTX1234A5BC", &[("serial", "FTX1234A5BC")]),
        ("board serial=0x1A2B3C4D ok", &[("serial", "0x1A2B3C4D")]),
        ("sn=XYZ12345 rev B", &[("serial", "XYZ12345")]),
        ("Service Tag: 5CD1234", &[("serial", "5CD1234")]),
        ("Seriennummer 21A4-7789-QX", &[("serial", "21A4-7789-QX")]),
        ("db:\n  password: hunter\n", &[("secret", "hunter")]),
        (
            "DB_PASSWORD=correct horse battery staple\n",
            &[("secret", "correct horse battery staple")],
        ),
        (
            "passphrase: violet anchor mountain seven  # rotate\n",
            &[("secret", "violet anchor mountain seven")],
        ),
        (key_body, &[("private_key", key_body)]),
        (
            "AAAAB3NzaC1yc2EAAAADAQABAAABAQC7\nabcdefghijklmnopqrstuvwxyz012345\n-----END RSA PRIVATE KEY-----",
            &[(
                "private_key",
                "AAAAB3NzaC1yc2EAAAADAQABAAABAQC7\nabcdefghijklmnopqrstuvwxyz012345\n-----END RSA PRIVATE KEY-----",
            )],
        ),
    ];
    for (text, expect) in cases {
        let expect: Vec<(String, String)> = expect
            .iter()
            .map(|(c, v)| (c.to_string(), v.to_string()))
            .collect();
        assert_eq!(found(&r, text), expect, "text: {text:?}");
    }
    // What the serial and password contexts must leave alone.
    for text in [
        "serial port /dev/ttyS0 at 115200 baud; serial: 115200",
        "serial console enabled, serial: enabled",
        "chip SN74HC595 and SN 74",
        "imei 490154203237519 (bad check digit)",
        "order 123456789012345 shipped",
        "Password: must be at least 12 characters\n",
        "password: the one on the sticker\n",
    ] {
        assert_eq!(found(&r, text), vec![], "text: {text:?}");
    }
}

#[test]
fn national_phone_numbers_by_region() {
    let r = default_redactor();
    let cases: &[(&str, &str)] = &[
        ("call 415 555 2671 today", "415 555 2671"),
        ("Atendimento (11) 91234-5678 hoje", "(11) 91234-5678"),
        ("móvil 612 34 56 78", "612 34 56 78"),
        ("komórka 512 345 678", "512 345 678"),
        ("手机 138 0013 8000", "138 0013 8000"),
        ("oficina 55 1234 5678", "55 1234 5678"),
        ("desk (212) 736-5000 ext. 204", "(212) 736-5000 ext. 204"),
        ("phone: 2125550123", "2125550123"),
        ("tel. 0301234567", "0301234567"),
    ];
    for (text, value) in cases {
        assert_eq!(
            found(&r, text),
            vec![("phone".to_string(), value.to_string())],
            "text: {text:?}"
        );
    }
    // Only the configured regions' national formats count; `+` numbers always do.
    let us_only = redactor(RedactionConfig {
        phone_regions: Some(vec!["US".into()]),
        ..Default::default()
    });
    assert_eq!(found(&us_only, "komórka 512 345 678"), vec![]);
    assert_eq!(found(&us_only, "call 415 555 2671").len(), 1);
    for text in [
        "2024 05 02 10 11 12 reading 1013 2247",
        "build 10.4.12.345 at 192.168.001.010",
        "rows 1 2 3 4 5 6 7 8 and 12 34 56",
    ] {
        assert_eq!(found(&r, text), vec![], "text: {text:?}");
    }
    let bad = Redactor::new(&RedactionConfig {
        phone_regions: Some(vec!["USA".into()]),
        ..Default::default()
    });
    assert!(matches!(
        bad,
        Err(RedactError::BadPhoneRegion { index: 0, .. })
    ));
}

#[test]
fn overlaps_resolve_to_the_longest_or_most_specific() {
    let r = default_redactor();
    let cases: &[(&str, &[(&str, &str)])] = &[
        // The password before `@` is not the start of an e-mail address.
        (
            "mysql://root:pw1@db.example.com",
            &[("url_credentials", "root:pw1")],
        ),
        // A token inside URL credentials goes with them (the longer span).
        (
            "https://x:ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5@github.com",
            &[(
                "url_credentials",
                "x:ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5",
            )],
        ),
        // Same span: the specific format wins over the generic assignment.
        (
            "token=AKIAIOSFODNN7EXAMPLE",
            &[("api_key", "AKIAIOSFODNN7EXAMPLE")],
        ),
        (
            "Authorization: Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.",
            &[("jwt", "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.")],
        ),
        // Digits inside an IBAN are not a phone number.
        (
            "DE89 3704 0044 0532 0130 00",
            &[("iban", "DE89 3704 0044 0532 0130 00")],
        ),
    ];
    for (text, want) in cases {
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(c, v)| (c.to_string(), v.to_string()))
            .collect();
        assert_eq!(found(&r, text), want, "text: {text:?}");
    }
}

#[test]
fn numbering_is_per_label_shared_across_texts_and_deduplicated() {
    let r = default_redactor();
    let mut s = r.session();
    let a = s
        .redact("a@example.com b@example.com a@example.com AKIAIOSFODNN7EXAMPLE")
        .unwrap();
    assert_eq!(a, "<EMAIL_1> <EMAIL_2> <EMAIL_1> <API_KEY_1>");
    let b = s.redact("again b@example.com, new c@example.com").unwrap();
    assert_eq!(b, "again <EMAIL_2>, new <EMAIL_3>");
    let counts: BTreeMap<String, usize> =
        [("api_key".to_string(), 1), ("email".to_string(), 3)].into();
    assert_eq!(s.counts(), counts);
    // A new session starts over.
    assert_eq!(r.session().redact("c@example.com").unwrap(), "<EMAIL_1>");
}

#[test]
fn a_placeholder_typed_by_the_user_is_not_reused() {
    let mut s = default_redactor().session();
    let out = s
        .redact("what does <EMAIL_1> mean for bob@example.com?")
        .unwrap();
    assert_eq!(out, "what does <EMAIL_1> mean for <EMAIL_2>?");
    assert_eq!(
        s.restore(&out),
        "what does <EMAIL_1> mean for bob@example.com?"
    );
}

#[test]
fn redacting_twice_changes_nothing_more() {
    let mut s = default_redactor().session();
    let once = s
        .redact("password=hunter2 mail a@example.com ip 10.1.2.3")
        .unwrap();
    assert_eq!(s.redact(&once).unwrap(), once);
}

#[test]
fn restore_puts_values_back_and_leaves_unknown_placeholders() {
    let mut s = default_redactor().session();
    s.redact("a@example.com AKIAIOSFODNN7EXAMPLE").unwrap();
    let answer = "Wrote to <EMAIL_1> with <API_KEY_1>; <EMAIL_7> and <EMAIL_1 and <<EMAIL_1>>.";
    assert_eq!(
        s.restore(answer),
        "Wrote to a@example.com with AKIAIOSFODNN7EXAMPLE; <EMAIL_7> and <EMAIL_1 and <a@example.com>."
    );
}

/// A session with a few placeholders, and an answer that uses them among look-alikes.
fn streaming_fixture() -> (Session, String) {
    let mut s = default_redactor().session();
    s.redact("a@example.com b@example.com AKIAIOSFODNN7EXAMPLE Grüße 10.0.0.7")
        .unwrap();
    let answer = "Hi <EMAIL_1>, ünïcödé <EMAIL_2>! <API_KEY_1><IPV4_1> <EMAIL_10> <EM <<API_KEY_1>> end <EMAIL_2".to_string();
    (s, answer)
}

fn assert_stream(s: &Session, answer: &str, cuts: &[usize]) {
    let mut restorer = s.restorer();
    let mut out = String::new();
    let mut last = 0;
    for &cut in cuts.iter().chain(std::iter::once(&answer.len())) {
        out.push_str(&restorer.push(&answer[last..cut]));
        assert!(
            restorer.held_len() <= restorer.max_hold(),
            "held {} > {}",
            restorer.held_len(),
            restorer.max_hold()
        );
        last = cut;
    }
    out.push_str(&restorer.finish());
    assert_eq!(out, s.restore(answer), "cuts {cuts:?}");
}

#[test]
fn streaming_restore_matches_whole_restore_for_every_split() {
    let (s, answer) = streaming_fixture();
    let bounds: Vec<usize> = answer.char_indices().map(|(i, _)| i).skip(1).collect();
    for &a in &bounds {
        assert_stream(&s, &answer, &[a]);
        for &b in bounds.iter().filter(|b| **b > a) {
            assert_stream(&s, &answer, &[a, b]);
        }
    }
    // One character at a time.
    assert_stream(&s, &answer, &bounds);
}

#[test]
fn streaming_restore_matches_whole_restore_for_random_chunks() {
    let (s, answer) = streaming_fixture();
    let bounds: Vec<usize> = answer.char_indices().map(|(i, _)| i).skip(1).collect();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..500 {
        let mut cuts: Vec<usize> = bounds
            .iter()
            .copied()
            .filter(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed.is_multiple_of(4)
            })
            .collect();
        cuts.dedup();
        assert_stream(&s, &answer, &cuts);
    }
}

#[test]
fn streaming_holds_only_possible_placeholder_starts() {
    let (s, _) = streaming_fixture();
    let mut r = s.restorer();
    assert_eq!(r.push("a < b <X"), "a < b <X");
    assert_eq!(r.push(" <EM"), " ");
    assert_eq!(r.held_len(), 3);
    assert_eq!(r.push("AIL_1"), "");
    assert_eq!(r.push("> ok"), "a@example.com ok");
    assert_eq!(r.push("<EMAIL_1x"), "<EMAIL_1x");
    assert_eq!(r.push("<IPV"), "");
    assert_eq!(r.finish(), "<IPV");
    // Nothing redacted: nothing is ever held.
    let mut empty = default_redactor().session().restorer();
    assert_eq!(empty.push("<EMAIL_"), "<EMAIL_");
    assert_eq!(empty.max_hold(), 0);
}

#[test]
fn block_policy_refuses_and_records_nothing() {
    let config = RedactionConfig {
        policy: [
            ("card_number".to_string(), CategoryPolicy::Block),
            ("ssn".to_string(), CategoryPolicy::Block),
        ]
        .into(),
        ..Default::default()
    };
    let mut s = redactor(config).session();
    let err = s
        .redact("mail a@example.com ssn 536-22-1234 card 4111 1111 1111 1111")
        .unwrap_err();
    assert_eq!(
        err,
        Refused::Blocked {
            categories: vec!["card_number".into(), "ssn".into()]
        }
    );
    assert!(s.is_empty());
    assert_eq!(s.redact("mail a@example.com").unwrap(), "mail <EMAIL_1>");
}

#[test]
fn allow_policy_skips_the_category() {
    let config = RedactionConfig {
        policy: [("email".to_string(), CategoryPolicy::Allow)].into(),
        ..Default::default()
    };
    let mut s = redactor(config).session();
    assert_eq!(
        s.redact("a@example.com 10.0.0.9").unwrap(),
        "a@example.com <IPV4_1>"
    );
}

#[test]
fn allow_and_deny_words() {
    let config = RedactionConfig {
        allow_words: vec!["Support@Example.com".into()],
        deny_words: vec![
            "Project Falcon".into(),
            "acme-internal".into(),
            "c++".into(),
        ],
        ..Default::default()
    };
    let mut s = redactor(config).session();
    let out = s
        .redact("mail support@example.com or ann@example.com about project falcon on acme-internal, not falconry; c++ ok")
        .unwrap();
    assert_eq!(
        out,
        "mail support@example.com or <EMAIL_1> about <DENY_WORD_1> on <DENY_WORD_2>, not falconry; <DENY_WORD_3> ok"
    );
    // A deny word inside a longer detection goes with it.
    assert_eq!(s.redact("x@acme-internal.com").unwrap(), "<EMAIL_2>");
}

#[test]
fn custom_patterns_become_categories() {
    let config = RedactionConfig {
        patterns: vec![
            NamedPattern {
                name: "ticket".into(),
                regex: r"\bTCK-[0-9]{6}\b".into(),
            },
            NamedPattern {
                name: "employee_id".into(),
                regex: r"\bemp#([0-9]{5})\b".into(),
            },
        ],
        policy: [("employee_id".to_string(), CategoryPolicy::Redact)].into(),
        ..Default::default()
    };
    let r = redactor(config);
    let mut s = r.session();
    assert_eq!(
        s.redact("TCK-123456 by emp#04211").unwrap(),
        "<TICKET_1> by emp#<EMPLOYEE_ID_1>"
    );
    assert_eq!(s.counts().get("employee_id"), Some(&1));
    assert!(r.category_names().contains(&"ticket"));
}

#[test]
fn bad_configs_are_refused_with_a_clear_error() {
    let pattern = |name: &str, regex: &str| RedactionConfig {
        patterns: vec![NamedPattern {
            name: name.into(),
            regex: regex.into(),
        }],
        ..Default::default()
    };
    let cases: Vec<(RedactionConfig, &str)> = vec![
        (
            pattern("ticket", "TCK-[0-9"),
            "redaction.patterns[0]: not a usable regex",
        ),
        (pattern("Ticket", "x"), "must be snake_case"),
        (pattern("email", "x"), "`email` is already a category"),
        (pattern("maybe", "x*"), "matches the empty string"),
        (pattern("huge", "\\w{500}"), "not a usable regex"),
        (
            RedactionConfig {
                policy: [("emails".to_string(), CategoryPolicy::Block)].into(),
                ..Default::default()
            },
            "unknown category `emails`",
        ),
        (
            RedactionConfig {
                serial_patterns: vec!["(".into()],
                ..Default::default()
            },
            "redaction.serial_patterns[0]",
        ),
        (
            RedactionConfig {
                allow_words: vec!["X".into()],
                deny_words: vec!["x".into()],
                ..Default::default()
            },
            "allow_words[0] and deny_words[0]",
        ),
        (
            RedactionConfig {
                deny_words: vec![" ".into()],
                ..Default::default()
            },
            "deny_words[0]: empty word",
        ),
    ];
    for (config, want) in cases {
        let err = Redactor::new(&config).unwrap_err().to_string();
        assert!(err.contains(want), "{err:?} should contain {want:?}");
    }
    let duplicate = RedactionConfig {
        patterns: vec![
            NamedPattern {
                name: "a".into(),
                regex: "x".into(),
            },
            NamedPattern {
                name: "a".into(),
                regex: "y".into(),
            },
        ],
        ..Default::default()
    };
    assert!(Redactor::new(&duplicate).is_err());
}

#[test]
fn toml_config_parses_strictly() {
    let text = r#"
        policy = { private_key = "block", ipv4 = "allow" }
        patterns = [{ name = "ticket", regex = "TCK-[0-9]{6}" }]
        serial_patterns = ['\bSN[:#]?\s*([A-Z0-9]{10})\b']
        allow_words = ["support@example.com"]
        deny_words = ["Project Falcon"]
    "#;
    let config: RedactionConfig = toml::from_str(text).unwrap();
    assert_eq!(
        config.policy.get("private_key"),
        Some(&CategoryPolicy::Block)
    );
    assert!(Redactor::new(&config).is_ok());
    let err = toml::from_str::<RedactionConfig>("polcy = {}")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field"), "{err}");
    let err = toml::from_str::<RedactionConfig>("policy = { email = \"hide\" }")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown variant"), "{err}");
}

#[test]
fn injected_fault_fails_closed() {
    let config = RedactionConfig {
        test_fault_trigger: Some("EDGELLM-FAULT".into()),
        ..Default::default()
    };
    let mut s = redactor(config).session();
    assert_eq!(s.redact("a@example.com").unwrap(), "<EMAIL_1>");
    let err = s.redact("b@example.com EDGELLM-FAULT").unwrap_err();
    assert!(matches!(err, Refused::Fault { .. }), "{err:?}");
    assert_eq!(s.counts().get("email"), Some(&1));
}

#[test]
fn debug_output_never_shows_values() {
    let config = RedactionConfig {
        deny_words: vec!["falcon".into()],
        ..Default::default()
    };
    let r = redactor(config.clone());
    let mut s = r.session();
    s.redact("a@example.com falcon").unwrap();
    let printed = format!("{config:?} {r:?} {s:?} {:?}", s.restorer());
    assert!(
        !printed.contains("example.com") && !printed.contains("falcon"),
        "{printed}"
    );
    assert!(printed.contains("\"email\": 1"), "{printed}");
}

#[test]
fn utf8_text_keeps_its_characters() {
    let mut s = default_redactor().session();
    let text = "Grüße 👋 an jürgen.müller@example.de — IP 10.0.0.1 ✓";
    let out = s.redact(text).unwrap();
    assert_eq!(out, "Grüße 👋 an <EMAIL_1> — IP <IPV4_1> ✓");
    assert_eq!(s.restore(&out), text);
}

#[test]
fn the_documented_config_example_is_valid() {
    #[derive(serde::Deserialize)]
    struct File {
        redaction: RedactionConfig,
    }
    let doc = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/redaction.md"));
    let example = doc
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .unwrap();
    let file: File = toml::from_str(example).unwrap();
    assert_eq!(file.redaction.patterns.len(), 2);
    let mut s = Redactor::new(&file.redaction).unwrap().session();
    assert_eq!(
        s.redact("TCK-123456 for Project Falcon").unwrap(),
        "<TICKET_1> for <DENY_WORD_1>"
    );
    assert!(matches!(
        s.redact("card 4111 1111 1111 1111"),
        Err(Refused::Blocked { .. })
    ));
}

/// Each text's person findings are exactly the names given.
fn assert_persons(r: &Redactor, cases: &[(&str, &[&str])]) {
    for (text, want) in cases {
        let got: Vec<String> = found(r, text)
            .into_iter()
            .filter(|(c, _)| c == "person")
            .map(|(_, v)| v)
            .collect();
        assert_eq!(&got, want, "in {text:?}");
    }
}

#[test]
fn person_names_need_a_title_a_cue_a_sign_off_or_a_given_name() {
    let r = default_redactor();
    let cases: &[(&str, &[&str])] = &[
        (
            "Ticket opened by Odalys Brennecke; on site.",
            &["Odalys Brennecke"],
        ),
        ("Dr. Ysolde Ferrand approved it", &["Dr. Ysolde Ferrand"]),
        (
            "Prof. Dr. Wendelin Auer-Brix B.Sc. signed",
            &["Prof. Dr. Wendelin Auer-Brix B.Sc."],
        ),
        (
            "Mrs Claire O'Halloran Jr. called",
            &["Mrs Claire O'Halloran Jr."],
        ),
        (
            "pani Ewa Ziemkiewicz-Nowak",
            &["pani Ewa Ziemkiewicz-Nowak"],
        ),
        (
            "Contact: Tamsin Okonkwo-Reyes, plant safety",
            &["Tamsin Okonkwo-Reyes"],
        ),
        (
            "Contact Quirin van der Haegen today",
            &["Quirin van der Haegen"],
        ),
        ("Hi Henrike,\nthe alarm is back", &["Henrike"]),
        ("Bonjour Mme Clémence Aubertin,", &["Mme Clémence Aubertin"]),
        (
            "Regards,\nOdalys Brennecke\nField Service",
            &["Odalys Brennecke"],
        ),
        (
            "Mit freundlichen Grüßen\nWendelgard Oberhauser",
            &["Wendelgard Oberhauser"],
        ),
        (
            "{\"assignee\": \"Marisol Etxeberria\"}",
            &["Marisol Etxeberria"],
        ),
        (
            "Yesterday Maarten Oosterhuis calibrated it",
            &["Maarten Oosterhuis"],
        ),
        ("Anna Kowalczyk replaced the filter", &["Anna Kowalczyk"]),
        (
            "técnico: Evaristo Quiñones Albarrán",
            &["Evaristo Quiñones Albarrán"],
        ),
        // A single word after a cue that is not a salutation needs the given-name list.
        ("opened by Katrin.", &["Katrin"]),
        ("opened by Brennecke.", &[]),
        // Capitalised words without context, company and product contexts.
        ("Powered by Home Assistant on a Raspberry Pi", &[]),
        ("Made by Bosch Rexroth, sold by Acme Industrial Supply", &[]),
        ("Contact Support if the Gateway Service stops", &[]),
        ("Hello World from the Edge Runtime", &[]),
        ("Monday Night Maintenance Window", &[]),
        ("Robust Zero-Defect Hierarchy module loaded", &[]),
        ("Thomas Group GmbH and Maria Stuart Inc", &[]),
        ("Dear Customer, your order shipped", &[]),
        ("the JSON says {\"name\": \"Main Pump\"}", &[]),
    ];
    assert_persons(&r, cases);
}

#[test]
fn bare_names_start_with_a_listed_given_name_and_a_surname_that_can_be_one() {
    let r = default_redactor();
    let cases: &[(&str, &[&str])] = &[
        // A given name of the wide (mimesis) list only, an unlisted surname.
        (
            "Wiebke Brammertz replaced the filter",
            &["Wiebke Brammertz"],
        ),
        // A hyphenated given name whose parts are listed.
        (
            "Spoke with Hans-Dietrich Wolkenhauer about it",
            &["Hans-Dietrich Wolkenhauer"],
        ),
        // An English word after a given name is a surname only when listed as one.
        ("Spoke with Thomas Baker about it", &["Thomas Baker"]),
        ("Firmware for Thomas Produce controller", &[]),
        // A given name that is also an English word takes a listed surname only.
        ("Mark Morris logged the reading", &["Mark Morris"]),
        ("Mark Done on the ticket", &[]),
        ("Grant Access to the panel", &[]),
        // Unlisted name words before a given name belong to the name; English ones do not.
        (
            "then Jorinde Anneliese Quesada called",
            &["Jorinde Anneliese Quesada"],
        ),
        ("Yesterday Anneliese Quesada called", &["Anneliese Quesada"]),
        // Title-case English after a cue is not a person.
        (
            "Opened via Engineer Value-Added Infrastructures portal",
            &[],
        ),
        ("Technician Will Smith replaced it", &["Will Smith"]),
        // Vendors whose names start with a given name.
        ("Replaced the Parker Hannifin valve", &[]),
        ("Allen-Bradley ControlLogix rack 2 faulted", &[]),
    ];
    assert_persons(&r, cases);
}

#[test]
fn postal_addresses_from_their_code_outwards() {
    let r = default_redactor();
    let cases: &[(&str, &[&str])] = &[
        (
            "Ship to 4417 Larkspur Hollow Apt. 12, Quellmont, OR 97381.",
            &["4417 Larkspur Hollow Apt. 12, Quellmont, OR 97381"],
        ),
        (
            "Site address: Brunhildenweg 23a, 71364 Winnenden",
            &["Brunhildenweg 23a, 71364 Winnenden"],
        ),
        (
            "Livraison: 14, rue des Tanneurs, 67000 Strasbourg",
            &["14, rue des Tanneurs, 67000 Strasbourg"],
        ),
        (
            "Enviar a Calle del Olivar 58, 2º B, Zaragoza, 50001",
            &["Calle del Olivar 58, 2º B, Zaragoza, 50001"],
        ),
        (
            "Entregar em Rua das Acácias, 310, Jardim América, 13087-540 Campinas / SP",
            &["Rua das Acácias, 310, Jardim América, 13087-540 Campinas / SP"],
        ),
        (
            "Spedire a Via dei Mille, 21, 40121, Bologna (BO)",
            &["Via dei Mille, 21, 40121, Bologna (BO)"],
        ),
        (
            "Adres: ul. Krucza 17/4, 00-525 Warszawa.",
            &["ul. Krucza 17/4, 00-525 Warszawa"],
        ),
        (
            "Deliver to:\n88 Wexford Lane\nDunmore, PA 18512\nCall ahead.",
            &["88 Wexford Lane\nDunmore, PA 18512"],
        ),
        (
            "{\"site\": \"Kanaalweg 5, 3526 KL, Utrecht\", \"units\": 3}",
            &["Kanaalweg 5, 3526 KL, Utrecht"],
        ),
        (
            "Return it to 27 Holloway Road, Islington, N7 8JG please",
            &["27 Holloway Road, Islington, N7 8JG"],
        ),
        (
            "PSC 1241, Box 5868, APO AP 25384",
            &["PSC 1241, Box 5868, APO AP 25384"],
        ),
        // Numbers that are not postal codes, and places without a street.
        ("Order 12345 shipped in 3 boxes", &[]),
        ("Pump Station North reported 4.2 bar at 12345 rpm", &[]),
        ("Deployed to the Springfield plant, zone 12, rack 40", &[]),
        ("Meet in Berlin, 10115 Berlin", &[]),
        ("GET /api/v1/items 200 12345ms", &[]),
    ];
    for (text, want) in cases {
        let got: Vec<String> = found(&r, text)
            .into_iter()
            .filter(|(c, _)| c == "address")
            .map(|(_, v)| v)
            .collect();
        assert_eq!(&got, want, "in {text:?}");
    }
}

#[test]
fn names_and_addresses_round_trip_and_can_be_allowed() {
    let r = default_redactor();
    let text = "Technician Odalys Brennecke, Brunhildenweg 23a, 71364 Winnenden";
    let mut s = r.session();
    let out = s.redact(text).unwrap();
    assert_eq!(out, "Technician <PERSON_1>, <ADDRESS_1>");
    assert_eq!(s.restore(&out), text);
    let allow = redactor(RedactionConfig {
        policy: [
            ("person".to_string(), CategoryPolicy::Allow),
            ("address".to_string(), CategoryPolicy::Allow),
        ]
        .into(),
        ..Default::default()
    });
    assert_eq!(allow.session().redact(text).unwrap(), text);
}

/// The phone fast path (`phone_fast.rs`) gives the `phonenumber` crate's verdict on every
/// number it answers for: example numbers of every type of every default region, written
/// plain, with the trunk prefix, in national groups, regrouped, with a digit changed, one
/// short or long, with the country code, and with `+`; and random digit groups. It must also
/// answer for most of them (else it is not the hot path it is meant to be).
#[test]
fn phone_fast_path_agrees_with_the_phonenumber_crate() {
    use super::checks::{digit_groups, international_accepts, region_accepts};
    use phonenumber::Type;
    let regions: Vec<_> = super::config::phone_regions(&RedactionConfig::default())
        .unwrap()
        .into_iter()
        .map(super::checks::PhoneRegion::with_fast_path)
        .collect();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng >> 33) % n
    };
    let mut national = Vec::new();
    let mut plus = Vec::new();
    // `+` and random digits: mostly codes of regions not configured, which go to the crate.
    let mut random_plus = Vec::new();
    for region in &regions {
        let meta = phonenumber::metadata::DATABASE
            .by_id(region.id.as_ref())
            .unwrap();
        let trunk = meta.national_prefix().unwrap_or("").to_string();
        let code = meta.country_code();
        let kinds = [
            Type::FixedLine,
            Type::Mobile,
            Type::TollFree,
            Type::PremiumRate,
            Type::SharedCost,
            Type::Voip,
            Type::PersonalNumber,
            Type::Uan,
        ];
        for kind in kinds {
            let Some(example) = meta.descriptors().get(kind).and_then(|d| d.example()) else {
                continue;
            };
            for round in 0..12 {
                let mut digits: Vec<u8> = example.bytes().collect();
                match round % 4 {
                    1 => {
                        let i = next(digits.len() as u64) as usize;
                        digits[i] = b'0' + next(10) as u8;
                    }
                    2 => {
                        digits.pop();
                    }
                    3 => digits.push(b'0' + next(10) as u8),
                    _ => {}
                }
                let digits = String::from_utf8(digits).unwrap();
                let grouped = phonenumber::parse(Some(region.id), format!("{trunk}{digits}"))
                    .map(|n| {
                        phonenumber::format(&n)
                            .mode(phonenumber::Mode::National)
                            .to_string()
                    })
                    .unwrap_or_else(|_| digits.clone());
                let mut regrouped = String::new();
                for (i, c) in format!("{trunk}{digits}").chars().enumerate() {
                    if i > 0 && next(3) == 0 {
                        regrouped.push([' ', '-', '.'][next(3) as usize]);
                    }
                    regrouped.push(c);
                }
                national.extend([
                    digits.clone(),
                    format!("{trunk}{digits}"),
                    grouped.clone(),
                    regrouped,
                    format!("{code}{digits}"),
                ]);
                plus.extend([
                    format!("+{code} {digits}"),
                    format!("+{code} ({trunk}){digits}"),
                    format!("+{code}{trunk}{digits}"),
                ]);
            }
        }
    }
    for _ in 0..600 {
        let len = 7 + next(7);
        let mut s = String::new();
        for i in 0..len {
            if i > 0 && next(4) == 0 {
                s.push(' ');
            }
            s.push((b'0' + next(10) as u8) as char);
        }
        random_plus.push(format!("+{s}"));
        national.push(s);
    }
    let (mut answered, mut asked) = (0, 0);
    for candidate in &national {
        let written = digit_groups(candidate);
        let digits: String = candidate.chars().filter(char::is_ascii_digit).collect();
        for region in &regions {
            asked += 1;
            let Some(v) = region.fast.as_ref().and_then(|f| f.verdict(&digits)) else {
                continue;
            };
            answered += 1;
            let fast = v.valid && (written.len() == 1 || v.groups == written);
            assert_eq!(
                fast,
                region_accepts(region.id, candidate, &written),
                "{candidate:?} in {:?}",
                region.id
            );
        }
    }
    assert!(
        answered * 10 > asked * 9,
        "the fast path answered {answered} of {asked}"
    );
    let mut answered_plus = 0;
    for (i, candidate) in plus.iter().chain(&random_plus).enumerate() {
        let digits: String = candidate.chars().filter(char::is_ascii_digit).collect();
        if let Some(fast) = super::phone_fast::international_verdict(&digits) {
            answered_plus += usize::from(i < plus.len());
            assert_eq!(fast, international_accepts(candidate), "{candidate:?}");
        }
    }
    assert!(
        answered_plus * 10 > plus.len() * 9,
        "{answered_plus} of {}",
        plus.len()
    );
}

/// Names and addresses in text a line or a JSON string carries: a sign-off after other text on
/// its line, and line breaks written as JSON's `\n` (tool arguments).
#[test]
fn names_and_addresses_across_real_and_escaped_line_breaks() {
    let r = default_redactor();
    let cases: &[(&str, &[(&str, &str)])] = &[
        (
            "Context: Best regards,\nQuirin van der Haegen\nField Service",
            &[("person", "Quirin van der Haegen")],
        ),
        (
            r#"{"note": "Best regards,\nQuirin van der Haegen\nField Service"}"#,
            &[("person", "Quirin van der Haegen")],
        ),
        (
            r#"{"note": "Deliver to:\n88 Wexford Lane\nDunmore, PA 18512\nCall ahead."}"#,
            &[("address", r"88 Wexford Lane\nDunmore, PA 18512")],
        ),
        ("No thanks\nQuirin was here", &[]),
    ];
    for (text, want) in cases {
        let got = found(&r, text);
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(c, v)| (c.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, want, "in {text:?}");
    }
}

/// A long text on one line with a name every few words: each name looks at a bounded piece of
/// its line (a search of the whole line per name made this quadratic).
#[test]
fn a_long_one_line_text_full_of_names_is_scanned_once() {
    let r = default_redactor();
    let text = "Ticket opened by Odalys Brennecke; ".repeat(20_000);
    let names = found(&r, &text)
        .into_iter()
        .filter(|(c, v)| c == "person" && v == "Odalys Brennecke")
        .count();
    assert_eq!(names, 20_000);
}
