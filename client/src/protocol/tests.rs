//! Codec tests: every request and response round-trips; every truncation
//! of a payload is an error, never a panic or a different value.

use super::*;

fn sample() -> Message {
    Message {
        key: Some("k".into()),
        tags: None,
        producer: Some("p".into()),
        properties: [("a".to_string(), "b".to_string())].into(),
        body: b"body".to_vec(),
        born_ms: 42,
    }
}

/// One request of every kind.
fn every_request() -> Vec<Request> {
    vec![
        Request::Produce {
            topic: "t".into(),
            oneway: false,
            messages: vec![sample(), Message::default()],
        },
        Request::Heartbeat {
            group: "g".into(),
            client_id: "c".into(),
            topic: "t".into(),
            auto_commit: true,
            dedupe: None,
        },
        Request::Heartbeat {
            group: "g".into(),
            client_id: "c".into(),
            topic: "t".into(),
            auto_commit: false,
            dedupe: Some(Dedupe {
                backend: "redis".into(),
                window_ms: 86_400_000,
            }),
        },
        Request::Pull {
            group: "g".into(),
            topic: "t".into(),
            queue_id: 1,
            offset: 2,
            max: 3,
            wait_ms: 4,
        },
        Request::SendBack {
            group: "g".into(),
            record_id: "r".into(),
            reason: "x".into(),
        },
        Request::ProduceHalf {
            topic: "t".into(),
            producer_group: "pg".into(),
            message: sample(),
        },
        Request::EndTransaction {
            producer_group: "pg".into(),
            id: "h".into(),
            state: TransactionState::Unknown,
            from_check: true,
        },
        Request::PollChecks {
            producer_group: "pg".into(),
            wait_ms: 7,
        },
        Request::Commit {
            group: "g".into(),
            topic: "t".into(),
            queue_id: 1,
            offset: 9,
            handled: vec![(7, 3), (8, 0)],
            duplicates: vec![(6, "first handled as 0A at 2026-12-01T06:00:00Z".into())],
        },
        Request::Leave {
            group: "g".into(),
            client_id: "c".into(),
        },
        Request::QueryOffset {
            group: "g".into(),
            topic: "t".into(),
            queue_id: 2,
        },
        Request::Auth {
            token: "s3cr/t token".into(),
        },
    ]
}

#[test]
fn requests_round_trip() {
    for req in every_request() {
        let (kind, payload) = req.encode();
        assert_eq!(Request::decode(kind, &payload), Ok(req));
    }
}

#[test]
fn responses_round_trip() {
    let resps = vec![
        Response::Produced(vec![Produced {
            status: SendStatus::FlushDiskTimeout,
            id: "i".into(),
            queue_id: 1,
            queue_offset: 9,
        }]),
        Response::Assignment(vec![("t".into(), 0), ("%RETRY%g".into(), 3)]),
        Response::Messages {
            messages: vec![Delivered {
                id: "i".into(),
                record_id: "r".into(),
                topic: "t".into(),
                queue_topic: "t".into(),
                queue_id: 0,
                queue_offset: 5,
                reconsume_times: 2,
                stored_ms: 7,
                message: sample(),
            }],
            next_offset: 6,
        },
        Response::Offset(None),
        Response::Offset(Some(3)),
        Response::Ok,
        Response::Error {
            code: ErrorCode::Unavailable,
            message: "down".into(),
        },
        Response::Error {
            code: ErrorCode::Unauthorized,
            message: "token first".into(),
        },
        Response::Checks(vec![TransactionCheck {
            id: "h".into(),
            topic: "t".into(),
            check_times: 2,
            message: Message::default(),
        }]),
    ];
    for resp in resps {
        let (kind, payload) = resp.encode();
        assert_eq!(Response::decode(kind, &payload), Ok(resp));
    }
}

#[test]
fn every_truncation_of_a_request_is_an_error() {
    for req in every_request() {
        let (kind, payload) = req.encode();
        for n in 0..payload.len() {
            assert!(
                Request::decode(kind, &payload[..n]).is_err(),
                "{req:?}: prefix {n} decoded"
            );
        }
    }
}

#[test]
fn an_auth_frame_with_extra_bytes_or_bad_utf8_is_refused() {
    let (kind, mut payload) = Request::Auth { token: "t".into() }.encode();
    assert_eq!(kind, K_AUTH);
    payload.push(0);
    assert!(Request::decode(kind, &payload).is_err());
    let mut w = Writer::default();
    w.bytes(&[0xff, 0xfe]);
    assert!(Request::decode(K_AUTH, &w.buf).is_err());
}
