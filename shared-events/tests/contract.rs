//! Pins the wire form of every event type: a contract change shows up in
//! review as a changed file under `tests/golden/`. Regenerate deliberately with
//! `UPDATE_GOLDEN=1 cargo test -p shared-events`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is a failed test, with its message"
)]

use chrono::{TimeZone, Utc};
use shared_events::*;
use std::path::PathBuf;
use uuid::Uuid;

fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | n)
}

fn sample_events() -> Vec<Event> {
    let at = Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0).unwrap();
    let (reservation_id, payment_id, user_id) = (id(1), id(2), id(3));
    let (concert_id, schedule_id, entry_id) = (id(4), id(5), id(6));
    vec![
        ConcertScheduled {
            concert_id,
            schedule_id,
            starts_at: at,
            seat_count: 50,
        }
        .into(),
        SeatHeld {
            reservation_id,
            schedule_id,
            seat_no: 7,
            price: 150_000,
            hold_expires_at: Some(Utc.with_ymd_and_hms(2026, 11, 20, 12, 5, 1).unwrap()),
        }
        .into(),
        SeatHoldRejected {
            reservation_id,
            schedule_id,
            seat_no: 7,
            reason: Reason::SeatTaken,
        }
        .into(),
        SeatReleased {
            reservation_id,
            schedule_id,
            seat_no: 7,
        }
        .into(),
        SeatSold {
            reservation_id,
            payment_id,
            schedule_id,
            seat_no: 7,
        }
        .into(),
        SeatSaleRejected {
            reservation_id,
            payment_id,
            reason: Reason::NotHeld,
        }
        .into(),
        QueueTokenAdmitted {
            token: id(7),
            user_id,
            concert_id,
            pass_expires_at: at,
        }
        .into(),
        QueuePassEnded {
            token: id(7),
            user_id,
            concert_id,
            reason: Reason::PaymentCompleted,
        }
        .into(),
        ReservationRequested {
            reservation_id,
            user_id,
            concert_id,
            schedule_id,
            seat_no: 7,
        }
        .into(),
        ReservationHeld {
            reservation_id,
            user_id,
            concert_id,
            schedule_id,
            seat_no: 7,
            price: 150_000,
            hold_expires_at: at,
        }
        .into(),
        ReservationRejected {
            reservation_id,
            reason: Reason::SeatTaken,
        }
        .into(),
        ReservationExpired {
            reservation_id,
            schedule_id,
            seat_no: 7,
        }
        .into(),
        ReservationCancelled {
            reservation_id,
            schedule_id,
            seat_no: 7,
            reason: Reason::SeatNotSold,
            payment_id: Some(payment_id),
        }
        .into(),
        ReservationConfirmed {
            reservation_id,
            payment_id,
            schedule_id,
            seat_no: 7,
        }
        .into(),
        ReservationConfirmationRejected {
            reservation_id,
            payment_id,
            reason: Reason::HoldExpired,
        }
        .into(),
        BalanceCharged {
            user_id,
            entry_id,
            amount: 1_000,
            balance_after: 5_000,
        }
        .into(),
        BalanceDebited {
            payment_id,
            reservation_id,
            user_id,
            entry_id,
            amount: 150_000,
        }
        .into(),
        BalanceDebitRejected {
            payment_id,
            reservation_id,
            user_id,
            amount: 150_000,
            reason: Reason::InsufficientBalance,
        }
        .into(),
        BalanceRefunded {
            payment_id,
            reservation_id,
            user_id,
            entry_id,
            amount: 150_000,
            reason: Some(Reason::HoldExpired),
        }
        .into(),
        PaymentRequested {
            payment_id,
            reservation_id,
            user_id,
            amount: 150_000,
        }
        .into(),
        PaymentCompleted {
            payment_id,
            reservation_id,
            user_id,
            concert_id,
            amount: 150_000,
        }
        .into(),
        PaymentFailed {
            payment_id,
            reservation_id,
            user_id,
            reason: Reason::HoldExpired,
            refunded: true,
        }
        .into(),
    ]
}

fn sample_envelope(event: Event) -> Envelope {
    Envelope {
        event_id: id(100),
        schema_version: SCHEMA_VERSION,
        occurred_at: Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 1).unwrap(),
        producer: event.event_type().producer(),
        partition_key: event.partition_key().to_string(),
        correlation_id: id(99),
        causation_id: Some(id(98)),
        event,
    }
}

/// A small valid message to bend into the odd shapes a consumer may meet.
fn seat_released_json() -> String {
    sample_envelope(
        SeatReleased {
            reservation_id: id(1),
            schedule_id: id(2),
            seat_no: 3,
        }
        .into(),
    )
    .to_json()
}

fn golden_path(event_type: EventType) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{event_type}.json"))
}

#[test]
fn every_event_type_has_a_sample() {
    let sampled: Vec<EventType> = sample_events().iter().map(Event::event_type).collect();
    for event_type in EventType::ALL {
        assert!(
            sampled.contains(event_type),
            "no golden sample for {event_type}"
        );
    }
    assert_eq!(sampled.len(), EventType::ALL.len());
}

#[test]
fn wire_form_matches_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for event in sample_events() {
        let event_type = event.event_type();
        let json = sample_envelope(event).to_json();
        let path = golden_path(event_type);
        if update {
            std::fs::write(&path, format!("{json}\n")).unwrap();
        }
        let golden = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_GOLDEN=1", path.display()));
        assert_eq!(json, golden.trim_end(), "wire form of {event_type} changed");
    }
}

#[test]
fn golden_files_decode_back_to_the_same_envelope() {
    for event in sample_events() {
        let expected = sample_envelope(event);
        let golden = std::fs::read(golden_path(expected.event_type())).unwrap();
        match Envelope::decode(&golden).unwrap() {
            Decoded::Known(decoded) => assert_eq!(*decoded, expected),
            other => panic!("expected a known event, got {other:?}"),
        }
    }
}

/// Consumers dead-letter messages over `MAX_MESSAGE_BYTES`: every event must
/// fit with a wide margin, or a valid event would be refused as poison.
#[test]
fn every_event_fits_the_message_limit_many_times_over() {
    for event in sample_events() {
        let event_type = event.event_type();
        let json = sample_envelope(event).to_json();
        assert!(
            json.len() * 32 < MAX_MESSAGE_BYTES,
            "{event_type} is {} bytes: near the {MAX_MESSAGE_BYTES}-byte limit",
            json.len()
        );
    }
}

#[test]
fn unknown_fields_are_tolerated() {
    let json = seat_released_json()
        .replacen("\"seat_no\":3", "\"seat_no\":3,\"section\":\"A\"", 1)
        .replacen("{", "{\"region\":\"kr\",", 1);
    let Decoded::Known(envelope) = Envelope::decode(json.as_bytes()).unwrap() else {
        panic!("extra fields must not make the event unknown");
    };
    assert_eq!(envelope.event_type(), EventType::SeatReleased);
}

#[test]
fn unknown_event_types_are_reported_not_rejected() {
    let json = seat_released_json().replace("\"SeatReleased\"", "\"SeatTeleported\"");
    match Envelope::decode(json.as_bytes()).unwrap() {
        Decoded::UnknownType {
            event_type,
            event_id,
        } => {
            assert_eq!(event_type, "SeatTeleported");
            assert_eq!(event_id, id(100));
        }
        other => panic!("expected UnknownType, got {other:?}"),
    }
}

#[test]
fn malformed_messages_are_errors() {
    let good = seat_released_json();
    let cases: Vec<(&str, String)> = vec![
        ("garbage", "not json at all".into()),
        (
            "missing event_id",
            good.replacen("\"event_id\"", "\"evt_id\"", 1),
        ),
        (
            "bad payload type",
            good.replace("\"seat_no\":3", "\"seat_no\":\"three\""),
        ),
        (
            "newer schema",
            good.replace("\"schema_version\":1", "\"schema_version\":2"),
        ),
        (
            "spoofed producer",
            good.replace("\"producer\":\"concert\"", "\"producer\":\"payment\""),
        ),
    ];
    for (name, json) in cases {
        assert!(
            Envelope::decode(json.as_bytes()).is_err(),
            "{name} must not decode"
        );
    }
}

#[test]
fn reactions_keep_the_correlation_and_point_at_their_cause() {
    let request = Envelope::new(ReservationRequested {
        reservation_id: id(1),
        user_id: id(2),
        concert_id: id(3),
        schedule_id: id(4),
        seat_no: 1,
    });
    assert_eq!(request.correlation_id, request.event_id);
    assert_eq!(request.event_id.get_version_num(), 7);
    assert_eq!(request.topic(), Topic::ReservationEvents);
    let held = Envelope::caused_by(
        &request,
        SeatHeld {
            reservation_id: id(1),
            schedule_id: id(4),
            seat_no: 1,
            price: 10,
            hold_expires_at: Some(Utc::now()),
        },
    );
    assert_eq!(held.correlation_id, request.event_id);
    assert_eq!(held.causation_id, Some(request.event_id));
    assert_ne!(held.event_id, request.event_id);
    assert_eq!(held.producer, Service::Concert);
    assert_eq!(held.topic(), Topic::ConcertEvents);
}

#[test]
fn topic_and_event_names_round_trip() {
    for topic in Topic::ALL {
        assert_eq!(Topic::parse(topic.name()), Some(topic));
        assert_eq!(topic.dead_letter_name(), format!("{}.dlq", topic.name()));
    }
    for event_type in EventType::ALL {
        assert_eq!(EventType::parse(event_type.as_str()), Some(*event_type));
    }
    for service in Service::ALL {
        assert_eq!(Service::parse(service.as_str()), Some(service));
    }
}

#[test]
fn a_refund_from_before_it_carried_a_reason_still_decodes() {
    let json = std::fs::read_to_string(golden_path(EventType::BalanceRefunded))
        .unwrap()
        .replace(",\"reason\":\"HOLD_EXPIRED\"", "");
    assert!(!json.contains("reason"));
    let Decoded::Known(envelope) = Envelope::decode(json.as_bytes()).unwrap() else {
        panic!("must decode");
    };
    let Event::BalanceRefunded(refund) = envelope.event else {
        panic!("a refund")
    };
    assert_eq!(refund.reason, None);
}

#[test]
fn a_hold_from_before_it_carried_its_expiry_still_decodes() {
    let golden = std::fs::read_to_string(golden_path(EventType::SeatHeld)).unwrap();
    let json = golden.replace("\"hold_expires_at\":\"2026-11-20T12:05:01Z\",", "");
    assert!(!json.contains("hold_expires_at"), "{golden}");
    let Decoded::Known(envelope) = Envelope::decode(json.as_bytes()).unwrap() else {
        panic!("must decode");
    };
    let Event::SeatHeld(held) = envelope.event else {
        panic!("a hold")
    };
    assert_eq!(held.hold_expires_at, None);
    let received = Utc::now();
    assert_eq!(held.expires_at(received), received + SeatHeld::LEGACY_HOLD);
}

#[test]
fn each_event_is_keyed_by_its_declared_field() {
    for event in sample_events() {
        let event_type = event.event_type();
        let envelope = Envelope::new(event);
        let payload: serde_json::Value = serde_json::from_str(&envelope.to_json()).unwrap();
        assert_eq!(
            payload["payload"][event_type.key_field()].as_str(),
            Some(envelope.partition_key.as_str()),
            "{event_type} is not keyed by {}",
            event_type.key_field()
        );
    }
}

#[test]
fn each_service_reads_exactly_the_topics_of_the_events_it_reacts_to() {
    for service in Service::ALL {
        let mut needed: Vec<Topic> = EventType::ALL
            .iter()
            .filter(|t| t.consumers().contains(&service))
            .map(|t| t.producer().topic())
            .collect();
        needed.sort_by_key(|t| t.name());
        needed.dedup();
        let mut read = service.consumes().to_vec();
        read.sort_by_key(|t| t.name());
        assert_eq!(read, needed, "{service} subscribes to the wrong topics");
    }
}

/// The accessors say what the wire says: an event names a payment,
/// reservation or seat exactly when its payload has those fields.
#[test]
fn each_events_ids_are_read_from_its_payload() {
    for event in sample_events() {
        let event_type = event.event_type();
        let envelope = Envelope::new(event.clone());
        let json: serde_json::Value = serde_json::from_str(&envelope.to_json()).unwrap();
        let payload = &json["payload"];
        let uuid = |field: &str| payload[field].as_str().map(|s| Uuid::parse_str(s).unwrap());
        assert_eq!(event.payment_id(), uuid("payment_id"), "{event_type}");
        assert_eq!(
            event_type.names_payment(),
            payload.get("payment_id").is_some(),
            "{event_type}"
        );
        assert_eq!(
            event.reservation_id(),
            uuid("reservation_id"),
            "{event_type}"
        );
        let seat = payload["seat_no"].as_u64().map(|seat_no| Seat {
            schedule_id: uuid("schedule_id").unwrap(),
            seat_no: u32::try_from(seat_no).unwrap(),
        });
        assert_eq!(event.seat(), seat, "{event_type}");
    }
}

/// The saga's steps agree with the rest of the declaration: a step is owed
/// by a service that hears its cause and publishes its answers, and only
/// the cause's own producer can stop waiting for the answer.
#[test]
fn each_saga_step_is_owed_by_a_consumer_of_its_cause() {
    for &event_type in EventType::ALL {
        for step in event_type.steps() {
            assert_eq!(step.cause, event_type);
            assert!(
                event_type.consumers().contains(&step.by),
                "{} answers {event_type} but does not consume it",
                step.by
            );
            for answer in step.answers {
                assert_eq!(answer.producer(), step.by, "{answer} answers {event_type}");
            }
            for moot in step.unless {
                assert_eq!(
                    moot.producer(),
                    event_type.producer(),
                    "{moot} after {event_type}"
                );
            }
        }
    }
}

/// A refund is owed for a cancellation that names a debited payment, not for
/// a fan's cancellation before paying; and a debit is not answered by a
/// cancellation that names no payment.
#[test]
fn saga_steps_are_matched_by_payment() {
    let (reservation_id, payment_id) = (id(1), id(2));
    let cancelled = |payment_id| -> Event {
        ReservationCancelled {
            reservation_id,
            schedule_id: id(5),
            seat_no: 7,
            reason: Reason::SeatNotSold,
            payment_id,
        }
        .into()
    };
    let debited: Event = BalanceDebited {
        payment_id,
        reservation_id,
        user_id: id(3),
        entry_id: id(6),
        amount: 100,
    }
    .into();
    let refund = |cause: &Event| {
        *cause
            .event_type()
            .steps()
            .iter()
            .find(|s| s.by == Service::MemberBalance)
            .unwrap()
    };
    let paid = cancelled(Some(payment_id));
    let unpaid = cancelled(None);
    assert!(refund(&paid).is_owed(&paid, &[&debited, &paid]));
    assert!(!refund(&unpaid).is_owed(&unpaid, &[&debited, &unpaid]));
    let confirm = EventType::BalanceDebited.steps()[0];
    assert!(!confirm.is_answered(&debited, &[&debited, &unpaid]));
    assert!(confirm.is_answered(&debited, &[&debited, &paid]));
}

/// The data platform's record has the fields, names and encodings the
/// payment service sent when it built the record as untyped JSON.
#[test]
fn the_data_platform_record_keeps_its_wire_form() {
    let completed_at = Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 1).unwrap()
        + chrono::TimeDelta::nanoseconds(123_456_789);
    let record = CompletedReservation {
        payment_id: id(2),
        reservation_id: id(1),
        user_id: id(3),
        concert_id: id(4),
        schedule_id: id(5),
        seat_no: 7,
        amount: 150_000,
        completed_at,
    };
    let untyped = serde_json::json!({
        "payment_id": id(2),
        "reservation_id": id(1),
        "user_id": id(3),
        "concert_id": id(4),
        "schedule_id": id(5),
        "seat_no": 7,
        "amount": 150_000,
        "completed_at": completed_at,
    });
    assert_eq!(serde_json::to_value(&record).unwrap(), untyped);
    assert_eq!(
        serde_json::from_value::<CompletedReservation>(untyped).unwrap(),
        record
    );
}
