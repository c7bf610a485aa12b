//! The layer's decisions with a clock of the test's own: `t0` and durations
//! after it, never the time the test runs at.

use super::*;

/// Partitions by name, readers by number, metadata answers (a count of
/// topics) by the list of topics asked for.
type Subject = State<&'static str, u32, Vec<&'static str>, usize>;

const READER: u32 = 7;

/// A consumer's `fetch.wait.max.ms` as the services set it.
const MAX_WAIT: Duration = Duration::from_millis(500);

const UNCOMMITTED: Isolation = Isolation::ReadUncommitted;

fn offsets(high_watermark: i64) -> Offsets {
    Offsets {
        log_start: 0,
        high_watermark,
        last_stable: high_watermark,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A state that remembers `partitions` with nothing from offset 5 on.
fn knowing(partitions: &[&'static str]) -> Subject {
    let mut state = Subject::default();
    for partition in partitions {
        let mark = state.offsets_mark(partition);
        state.remember_offsets(partition, mark, offsets(5));
    }
    state
}

/// One request's first round: the reader reads each partition at offset 5
/// with the client's whole wait as budget, microseconds apart.
fn first_round(state: &mut Subject, partitions: &[&'static str], at: Instant) -> Vec<Fetch<u32>> {
    partitions
        .iter()
        .enumerate()
        .map(|(n, partition)| {
            let now = at + Duration::from_micros(n as u64 * 10);
            let budget = MAX_WAIT - (now - at);
            state.plan_fetch(Some(READER), partition, 5, budget, UNCOMMITTED, now)
        })
        .collect()
}

// Offsets: remembered, voided by writes, bounded.

#[test]
fn offsets_read_are_remembered_and_answer_reads_at_the_end() {
    let mut state = Subject::default();
    assert_eq!(state.offsets(&"seats"), None);
    assert!(
        !state.nothing_at(&"seats", 5, UNCOMMITTED),
        "unknown: read it"
    );

    let mark = state.offsets_mark(&"seats");
    state.remember_offsets(&"seats", mark, offsets(5));
    assert_eq!(state.offsets(&"seats"), Some(offsets(5)));
    assert!(state.nothing_at(&"seats", 5, UNCOMMITTED));
    assert!(state.nothing_at(&"seats", 9, UNCOMMITTED), "past the end");
    assert!(!state.nothing_at(&"seats", 4, UNCOMMITTED), "a record left");
}

#[test]
fn a_committed_read_ends_at_the_last_stable_offset() {
    let mut state = Subject::default();
    let mark = state.offsets_mark(&"seats");
    let open_transaction = Offsets {
        log_start: 0,
        high_watermark: 8,
        last_stable: 5,
    };
    state.remember_offsets(&"seats", mark, open_transaction);
    assert!(state.nothing_at(&"seats", 5, Isolation::ReadCommitted));
    assert!(!state.nothing_at(&"seats", 5, Isolation::ReadUncommitted));
    assert!(state.nothing_at(&"seats", 8, Isolation::ReadUncommitted));
}

#[test]
fn a_produce_voids_its_partitions_offsets_only() {
    let mut state = knowing(&["seats", "payments"]);
    state.produced(&"seats", true);
    assert_eq!(state.offsets(&"seats"), None);
    assert!(!state.nothing_at(&"seats", 5, UNCOMMITTED));
    assert_eq!(state.offsets(&"payments"), Some(offsets(5)));
}

#[test]
fn a_failed_produce_to_a_known_partition_voids_its_offsets() {
    let mut state = knowing(&["seats"]);
    state.produced(&"seats", false);
    assert_eq!(state.offsets(&"seats"), None, "it may have written");
}

#[test]
fn offsets_read_while_a_produce_landed_are_not_remembered() {
    let mut state = knowing(&["seats"]);
    state.produced(&"seats", true);
    let mark = state.offsets_mark(&"seats");
    // The read from storage is under way when another produce lands.
    state.produced(&"seats", true);
    state.remember_offsets(&"seats", mark, offsets(6));
    assert_eq!(state.offsets(&"seats"), None);

    // A read with nothing written meanwhile is remembered.
    let mark = state.offsets_mark(&"seats");
    state.remember_offsets(&"seats", mark, offsets(7));
    assert_eq!(state.offsets(&"seats"), Some(offsets(7)));
}

#[test]
fn offsets_read_beside_a_failed_produce_to_an_unknown_partition_are_not_remembered() {
    let mut state = Subject::default();
    let mark = state.offsets_mark(&"seats");
    // Failed, and no entry for it: maybe the partition that is being read.
    state.produced(&"new-topic", false);
    state.remember_offsets(&"seats", mark, offsets(5));
    assert_eq!(state.offsets(&"seats"), None);
}

#[test]
fn failed_produces_to_unknown_partitions_leave_no_entries() {
    let mut state = Subject::default();
    for _ in 0..500 {
        state.produced(&"made-up", false);
    }
    assert_eq!(state.known_partitions(), 0);
    state.produced(&"seats", true);
    assert_eq!(state.known_partitions(), 1);
}

#[test]
fn a_change_to_the_log_voids_every_partitions_offsets() {
    let mut state = knowing(&["seats", "payments"]);
    let mark = state.offsets_mark(&"seats");
    state.log_changed();
    assert_eq!(state.offsets(&"seats"), None);
    assert_eq!(state.offsets(&"payments"), None);
    // A read that began before the change is not remembered either.
    state.remember_offsets(&"seats", mark, offsets(5));
    assert_eq!(state.offsets(&"seats"), None);
}

#[test]
fn a_change_to_topics_keeps_the_offsets() {
    let mut state = knowing(&["seats"]);
    state.topics_changed();
    assert_eq!(state.offsets(&"seats"), Some(offsets(5)));
}

#[test]
fn a_deleted_topic_leaves_no_partition_entries() {
    let mut state = knowing(&["seats", "payments"]);
    state.topic_deleted();
    assert_eq!(state.known_partitions(), 0);
    assert_eq!(state.offsets(&"payments"), None);
}

// Metadata: remembered while valid, only for topics that exist, bounded.

#[test]
fn metadata_is_remembered_until_topics_or_the_log_change() {
    let mut state = Subject::default();
    let seats = vec!["seats"];
    assert_eq!(state.metadata(&seats), None);
    let mark = state.metadata_mark();
    state.remember_metadata(seats.clone(), mark, 1, true);
    assert_eq!(state.metadata(&seats), Some(1));

    state.topics_changed();
    assert_eq!(state.metadata(&seats), None, "a topic was created");

    let mark = state.metadata_mark();
    state.remember_metadata(seats.clone(), mark, 1, true);
    state.log_changed();
    assert_eq!(state.metadata(&seats), None, "a topic was deleted");
}

#[test]
fn metadata_naming_a_topic_that_does_not_exist_is_not_remembered() {
    let mut state = Subject::default();
    for _ in 0..500 {
        let mark = state.metadata_mark();
        state.remember_metadata(vec!["seats", "made-up"], mark, 2, false);
    }
    assert_eq!(state.metadata_answers(), 0);
    assert_eq!(state.metadata(&vec!["seats", "made-up"]), None);
}

#[test]
fn metadata_read_while_topics_changed_is_not_remembered() {
    let mut state = Subject::default();
    let mark = state.metadata_mark();
    state.topics_changed();
    state.remember_metadata(vec!["seats"], mark, 1, true);
    assert_eq!(state.metadata_answers(), 0);

    let mark = state.metadata_mark();
    state.log_changed();
    state.remember_metadata(vec!["seats"], mark, 1, true);
    assert_eq!(state.metadata_answers(), 0);
}

#[test]
fn answers_read_at_an_earlier_epoch_go_when_another_is_remembered() {
    let mut state = Subject::default();
    let mark = state.metadata_mark();
    state.remember_metadata(vec!["seats"], mark, 1, true);
    state.topics_changed();
    let mark = state.metadata_mark();
    state.remember_metadata(vec!["payments"], mark, 1, true);
    assert_eq!(state.metadata_answers(), 1);
    assert!(!state.remembers_metadata(&vec!["seats"]));
}

#[test]
fn metadata_answers_are_capped_and_the_least_recently_used_goes() {
    let mut state = Subject::default();
    let kept = vec!["seats"];
    let mark = state.metadata_mark();
    state.remember_metadata(kept.clone(), mark, 1, true);
    // Every list naming `seats` n times is a list of its own.
    for n in 2..METADATA_ANSWERS_KEPT + 100 {
        let asked = vec!["seats"; n];
        assert_eq!(state.metadata(&asked), None);
        state.remember_metadata(asked, mark, n, true);
        // The services' own list stays in use.
        assert_eq!(state.metadata(&kept), Some(1));
    }
    assert_eq!(state.metadata_answers(), METADATA_ANSWERS_KEPT);
    assert!(state.remembers_metadata(&kept));
    assert!(
        !state.remembers_metadata(&vec!["seats"; 2]),
        "the least recently used went first"
    );
    assert!(state.remembers_metadata(&vec!["seats"; METADATA_ANSWERS_KEPT + 99]));
}

#[test]
fn a_list_remembered_again_at_the_cap_replaces_itself() {
    let mut state = Subject::default();
    let mark = state.metadata_mark();
    for n in 1..=METADATA_ANSWERS_KEPT {
        state.remember_metadata(vec!["seats"; n], mark, n, true);
    }
    // The least recently used is the first; remembering it again evicts nothing.
    state.remember_metadata(vec!["seats"], mark, 10, true);
    assert_eq!(state.metadata_answers(), METADATA_ANSWERS_KEPT);
    assert_eq!(state.metadata(&vec!["seats"]), Some(10));
    assert!(state.remembers_metadata(&vec!["seats"; 2]));
}

// Fetches: when a read waits, and until when.

#[test]
fn a_read_that_may_find_records_reads_them() {
    let mut state = Subject::default();
    let t0 = Instant::now();
    assert_eq!(
        state.plan_fetch(Some(READER), &"seats", 5, MAX_WAIT, UNCOMMITTED, t0),
        Fetch::Read,
        "offsets unknown"
    );
    let mut state = knowing(&["seats"]);
    assert_eq!(
        state.plan_fetch(Some(READER), &"seats", 3, MAX_WAIT, UNCOMMITTED, t0),
        Fetch::Read,
        "records from 3 to 5"
    );
}

#[test]
fn the_first_request_of_a_connection_does_not_wait() {
    // Its first round is how it learns which partitions the reader reads.
    let mut state = knowing(&["seats", "payments"]);
    let t0 = Instant::now();
    assert_eq!(
        first_round(&mut state, &["seats", "payments"], t0),
        [Fetch::Nothing, Fetch::Nothing]
    );
}

#[test]
fn a_quiet_request_waits_once_until_the_clients_deadline_less_the_margin() {
    let mut state = knowing(&["seats", "payments"]);
    let t0 = Instant::now();
    _ = first_round(&mut state, &["seats", "payments"], t0);
    let t1 = t0 + MAX_WAIT;
    assert_eq!(
        first_round(&mut state, &["payments", "seats"], t1),
        [
            Fetch::Wait {
                reader: READER,
                until: t1 + MAX_WAIT - WAIT_MARGIN
            },
            // Whatever woke the first read, the request waited once.
            Fetch::Nothing,
        ]
    );
}

#[test]
fn a_read_without_a_connection_never_waits() {
    let mut state = knowing(&["seats"]);
    let t0 = Instant::now();
    for n in 0..5 {
        let now = t0 + MAX_WAIT * n;
        assert_eq!(
            state.plan_fetch(None, &"seats", 5, MAX_WAIT, UNCOMMITTED, now),
            Fetch::Nothing
        );
    }
}

#[test]
fn a_request_does_not_wait_while_another_partition_of_the_reader_has_records() {
    let mut state = knowing(&["seats", "payments"]);
    let t0 = Instant::now();
    _ = first_round(&mut state, &["seats", "payments"], t0);
    state.produced(&"payments", true);
    let t1 = t0 + MAX_WAIT;
    assert_eq!(
        state.plan_fetch(Some(READER), &"seats", 5, MAX_WAIT, UNCOMMITTED, t1),
        Fetch::Nothing,
        "answered at once: the round goes on to read payments"
    );
    assert!(!state.is_quiet(READER, UNCOMMITTED));
}

#[test]
fn a_request_that_found_records_does_not_wait() {
    let mut state = knowing(&["seats", "payments"]);
    let t0 = Instant::now();
    _ = first_round(&mut state, &["seats", "payments"], t0);
    let t1 = t0 + MAX_WAIT;
    // payments' offsets are not known: read, and it returns records up to 5.
    state.produced(&"payments", true);
    assert_eq!(
        state.plan_fetch(Some(READER), &"payments", 4, MAX_WAIT, UNCOMMITTED, t1),
        Fetch::Read
    );
    state.found(READER, &"payments", 5);
    let mark = state.offsets_mark(&"payments");
    state.remember_offsets(&"payments", mark, offsets(5));
    assert!(state.is_quiet(READER, UNCOMMITTED), "read up to the end");
    assert_eq!(
        state.plan_fetch(
            Some(READER),
            &"seats",
            5,
            MAX_WAIT - Duration::from_micros(10),
            UNCOMMITTED,
            t1 + Duration::from_micros(10)
        ),
        Fetch::Nothing,
        "the records go out in this round"
    );
}

#[test]
fn found_records_move_where_the_reader_reads_next() {
    let mut state = knowing(&["seats"]);
    let t0 = Instant::now();
    _ = state.plan_fetch(Some(READER), &"seats", 2, MAX_WAIT, UNCOMMITTED, t0);
    assert!(!state.is_quiet(READER, UNCOMMITTED), "records from 2 to 5");
    state.found(READER, &"seats", 5);
    assert!(state.is_quiet(READER, UNCOMMITTED));
}

#[test]
fn a_later_round_of_the_first_request_may_wait() {
    // nisshi's later rounds get half the remaining wait: not a new request,
    // but by then the reader has read all its partitions once.
    let mut state = knowing(&["seats"]);
    let t0 = Instant::now();
    _ = first_round(&mut state, &["seats"], t0);
    let t1 = t0 + ms(20);
    let half = (MAX_WAIT - ms(20)) / 2;
    assert_eq!(
        state.plan_fetch(Some(READER), &"seats", 5, half, UNCOMMITTED, t1),
        Fetch::Wait {
            reader: READER,
            until: t1 + half - WAIT_MARGIN
        }
    );
}

#[test]
fn a_wait_ends_by_the_requests_deadline_even_if_a_read_has_a_later_one() {
    let mut state = knowing(&["seats"]);
    let t0 = Instant::now();
    _ = first_round(&mut state, &["seats"], t0);
    // A later round of the same request (a budget short of a new
    // request's) whose budget ends after the client's deadline.
    let t1 = t0 + ms(300);
    assert_eq!(
        state.plan_fetch(Some(READER), &"seats", 5, ms(250), UNCOMMITTED, t1),
        Fetch::Wait {
            reader: READER,
            until: t0 + MAX_WAIT - WAIT_MARGIN
        }
    );
}

#[test]
fn a_wait_within_the_margin_is_already_over() {
    let mut state = knowing(&["seats"]);
    let t0 = Instant::now();
    _ = first_round(&mut state, &["seats"], t0);
    let t1 = t0 + ms(50);
    let Fetch::Wait { until, .. } =
        state.plan_fetch(Some(READER), &"seats", 5, ms(4), UNCOMMITTED, t1)
    else {
        panic!("a quiet later round waits");
    };
    assert!(
        until <= t1,
        "answered at once, before nisshi gives up on it"
    );
}

#[test]
fn reads_whose_deadlines_are_within_microseconds_are_one_request() {
    let mut state = knowing(&["seats", "payments"]);
    let t0 = Instant::now();
    _ = first_round(&mut state, &["seats", "payments"], t0);
    let t1 = t0 + MAX_WAIT;
    assert!(matches!(
        state.plan_fetch(Some(READER), &"seats", 5, MAX_WAIT, UNCOMMITTED, t1),
        Fetch::Wait { .. }
    ));
    // Woken 1 ms later, the next read's deadline is 150 µs off: the same
    // request, which waited already.
    let t2 = t1 + ms(1);
    let same = MAX_WAIT - ms(1) + Duration::from_micros(150);
    assert_eq!(
        state.plan_fetch(Some(READER), &"payments", 5, same, UNCOMMITTED, t2),
        Fetch::Nothing
    );
    // 300 µs further off, with the client's whole wait: the next request.
    let next = same + Duration::from_micros(300);
    assert_eq!(
        state.plan_fetch(Some(READER), &"payments", 5, next, UNCOMMITTED, t2),
        Fetch::Wait {
            reader: READER,
            until: t2 + next - WAIT_MARGIN
        }
    );
}

#[test]
fn a_partition_not_read_for_two_seconds_is_no_longer_watched() {
    let mut state = knowing(&["seats", "payments"]);
    let t0 = Instant::now();
    _ = first_round(&mut state, &["seats", "payments"], t0);
    // A rebalance gave payments to another consumer, which reads it.
    state.produced(&"payments", true);
    let t1 = t0 + ms(1900);
    assert_eq!(first_round(&mut state, &["seats"], t1), [Fetch::Nothing]);
    let t2 = t0 + ms(2100);
    assert_eq!(
        first_round(&mut state, &["seats"], t2),
        [Fetch::Wait {
            reader: READER,
            until: t2 + MAX_WAIT - WAIT_MARGIN
        }]
    );
}

#[test]
fn a_partition_is_watched_for_four_of_the_readers_longest_waits() {
    let long_wait = Duration::from_secs(1);
    let mut state = knowing(&["seats", "payments"]);
    let t0 = Instant::now();
    for partition in ["seats", "payments"] {
        _ = state.plan_fetch(Some(READER), &partition, 5, long_wait, UNCOMMITTED, t0);
    }
    state.produced(&"payments", true);
    let t1 = t0 + ms(3900);
    assert_eq!(
        state.plan_fetch(Some(READER), &"seats", 5, long_wait, UNCOMMITTED, t1),
        Fetch::Nothing
    );
    let t2 = t0 + ms(4100);
    assert_eq!(
        state.plan_fetch(Some(READER), &"seats", 5, long_wait, UNCOMMITTED, t2),
        Fetch::Wait {
            reader: READER,
            until: t2 + long_wait - WAIT_MARGIN
        }
    );
}

#[test]
fn readers_not_seen_for_a_minute_are_forgotten() {
    let mut state = knowing(&["seats"]);
    let t0 = Instant::now();
    for reader in 0..100 {
        _ = state.plan_fetch(Some(reader), &"seats", 5, MAX_WAIT, UNCOMMITTED, t0);
    }
    let t1 = t0 + Duration::from_secs(30);
    _ = state.plan_fetch(Some(READER), &"seats", 5, MAX_WAIT, UNCOMMITTED, t1);
    assert_eq!(state.readers.len(), 100, "not swept before a minute passed");

    let t2 = t0 + Duration::from_secs(61);
    _ = state.plan_fetch(Some(1000), &"seats", 5, MAX_WAIT, UNCOMMITTED, t2);
    let kept: Vec<u32> = state.readers.keys().copied().collect();
    assert_eq!(kept, [READER, 1000], "seen within the minute");
}

#[test]
fn a_forgotten_reader_starts_afresh() {
    let mut state = knowing(&["seats"]);
    let t0 = Instant::now();
    _ = first_round(&mut state, &["seats"], t0);
    _ = first_round(&mut state, &["seats"], t0 + MAX_WAIT);
    // Another connection, served by a task with the same id after the
    // first closed: its first request learns its partitions again.
    let t1 = t0 + Duration::from_secs(120);
    assert_eq!(first_round(&mut state, &["seats"], t1), [Fetch::Nothing]);
}

#[test]
fn a_waiting_read_stops_waiting_when_one_of_its_partitions_has_records() {
    let mut state = knowing(&["seats", "payments"]);
    let t0 = Instant::now();
    _ = first_round(&mut state, &["seats", "payments"], t0);
    assert!(matches!(
        first_round(&mut state, &["seats"], t0 + MAX_WAIT)[..],
        [Fetch::Wait { .. }]
    ));
    assert!(state.is_quiet(READER, UNCOMMITTED));
    state.produced(&"payments", true);
    assert!(!state.is_quiet(READER, UNCOMMITTED));
    assert!(
        state.nothing_at(&"seats", 5, UNCOMMITTED),
        "the woken read of seats still answers nothing; payments is read next"
    );
}

#[test]
fn an_unknown_reader_is_not_quiet() {
    let state = knowing(&["seats"]);
    assert!(!state.is_quiet(READER, UNCOMMITTED));
}

#[test]
fn readers_are_swept_once_a_minute_not_at_every_read() {
    let mut state = knowing(&["seats"]);
    let t0 = Instant::now();
    _ = state.plan_fetch(Some(1), &"seats", 5, MAX_WAIT, UNCOMMITTED, t0);
    _ = state.plan_fetch(Some(2), &"seats", 5, MAX_WAIT, UNCOMMITTED, t0 + ms(1000));
    // A sweep: reader 2 was seen just within the minute.
    _ = state.plan_fetch(Some(3), &"seats", 5, MAX_WAIT, UNCOMMITTED, t0 + ms(61_000));
    assert_eq!(state.readers.keys().copied().collect::<Vec<_>>(), [2, 3]);
    // Reader 2 is past the minute now, but the next sweep is a minute away.
    _ = state.plan_fetch(Some(3), &"seats", 5, MAX_WAIT, UNCOMMITTED, t0 + ms(63_000));
    assert_eq!(state.readers.keys().copied().collect::<Vec<_>>(), [2, 3]);
    _ = state.plan_fetch(
        Some(3),
        &"seats",
        5,
        MAX_WAIT,
        UNCOMMITTED,
        t0 + ms(121_500),
    );
    assert_eq!(state.readers.keys().copied().collect::<Vec<_>>(), [3]);
}
