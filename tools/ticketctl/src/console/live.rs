//! The live flow: one reader follows every event and dead-letter topic
//! (without a consumer group, as `ticketctl events --follow` does) and
//! hands each message to every open page through a broadcast channel.
//!
//! A page that reads slower than the cluster writes is not waited for: the
//! channel keeps the newest messages and tells the page how many it
//! missed, which the page shows. A new page first gets the recent history,
//! then what arrives; both are taken under one lock, so nothing falls
//! between them and nothing comes twice.

use actix_web::web::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use shared_events::dead_letter_topic;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

use crate::inspect::{event_topics, KafkaOptions, Reader, Record};

/// Messages a page may fall behind by before it is told it missed some.
const CHANNEL: usize = 2048;

/// A message as a page receives it, serialised once for every page.
pub struct Item {
    topic: String,
    event_type: Option<String>,
    key: Option<String>,
    /// The server-sent event, ready to write.
    frame: Bytes,
}

impl Item {
    fn of(record: &Record) -> Item {
        Item {
            topic: record.topic.clone(),
            event_type: record.envelope().map(|e| e.event_type().to_string()),
            key: record.key.clone(),
            frame: frame("record", &record.to_json().to_string()),
        }
    }
}

/// One server-sent event.
pub fn frame(event: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// What a page asked to see; empty fields match everything.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct Filter {
    pub topic: Option<String>,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub key: Option<String>,
}

impl Filter {
    pub fn admits(&self, item: &Item) -> bool {
        let wanted = |want: &Option<String>, have: Option<&str>| {
            want.as_deref()
                .filter(|w| !w.is_empty())
                .is_none_or(|w| have.is_some_and(|h| h.eq_ignore_ascii_case(w)))
        };
        wanted(&self.topic, Some(&item.topic))
            && wanted(&self.event_type, item.event_type.as_deref())
            && wanted(&self.key, item.key.as_deref())
    }
}

struct Shared {
    history: VecDeque<Arc<Item>>,
    /// Saga outcomes seen since the last tick, by name.
    outcomes: BTreeMap<&'static str, u64>,
}

/// How one attempt to follow the topics ended.
enum Followed {
    /// Not every event and dead-letter topic exists yet.
    NotYet,
    Ended,
}

pub struct Live {
    shared: Mutex<Shared>,
    sender: broadcast::Sender<Arc<Item>>,
    ticks: broadcast::Sender<Bytes>,
    keep: usize,
}

impl Live {
    /// Starts following the cluster's topics from `since` ago, keeping the
    /// last `keep` messages for new pages.
    pub fn start(kafka: KafkaOptions, since: TimeDelta, keep: usize) -> Arc<Live> {
        let (sender, _) = broadcast::channel(CHANNEL);
        let (ticks, _) = broadcast::channel(64);
        let live = Arc::new(Live {
            shared: Mutex::new(Shared {
                history: VecDeque::with_capacity(keep),
                outcomes: BTreeMap::new(),
            }),
            sender,
            ticks,
            keep,
        });
        let follower = live.clone();
        std::thread::spawn(move || {
            let mut back = since;
            loop {
                // Follows until the broker fails; then starts again from
                // the last few seconds (a message seen twice is harmless
                // here, one missed would not be). Until every topic exists
                // (a cluster still starting) it waits, window unchanged.
                match follower.follow(&kafka, Utc::now() - back) {
                    Ok(Followed::NotYet) => {}
                    Ok(Followed::Ended) => back = TimeDelta::seconds(10),
                    Err(error) => {
                        eprintln!("console: following the topics failed, retrying: {error:#}");
                        back = TimeDelta::seconds(10);
                    }
                }
                std::thread::sleep(Duration::from_secs(2));
            }
        });
        live
    }

    fn follow(&self, kafka: &KafkaOptions, since: DateTime<Utc>) -> anyhow::Result<Followed> {
        let reader = Reader::connect(kafka)?;
        let mut ranges = Vec::new();
        for topic in event_topics() {
            for name in [dead_letter_topic(&topic), topic] {
                if reader.partitions(&name)? == 0 {
                    return Ok(Followed::NotYet);
                }
                ranges.extend(reader.ranges(&name, None, Some(since), true)?);
            }
        }
        // Outcomes are counted as they happen, not for the history read
        // at start (that would be one spike of old sagas).
        let counted_from = Utc::now() - TimeDelta::seconds(5);
        reader.read(&ranges, |record| {
            let outcome = record
                .envelope()
                .filter(|e| e.occurred_at >= counted_from)
                .and_then(|e| e.event.saga_outcome())
                .map(|(outcome, _)| outcome.as_str());
            self.publish(Item::of(&record), outcome);
            true
        })?;
        Ok(Followed::Ended)
    }

    fn publish(&self, item: Item, outcome: Option<&'static str>) {
        let item = Arc::new(item);
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        if shared.history.len() == self.keep {
            shared.history.pop_front();
        }
        shared.history.push_back(item.clone());
        if let Some(outcome) = outcome {
            *shared.outcomes.entry(outcome).or_default() += 1;
        }
        // No page listening is not an error.
        let _ = self.sender.send(item);
    }

    /// Once a second: the saga outcomes of that second, to every page.
    pub async fn tick(self: Arc<Live>) {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            every.tick().await;
            let counts = std::mem::take(
                &mut self
                    .shared
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .outcomes,
            );
            let data = json!({ "at": Utc::now(), "counts": counts }).to_string();
            let _ = self.ticks.send(frame("outcomes", &data));
        }
    }

    /// The recent history a new page starts with, and the live messages
    /// after it.
    pub fn subscribe(
        &self,
    ) -> (
        Vec<Arc<Item>>,
        broadcast::Receiver<Arc<Item>>,
        broadcast::Receiver<Bytes>,
    ) {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        (
            shared.history.iter().cloned().collect(),
            self.sender.subscribe(),
            self.ticks.subscribe(),
        )
    }
}

/// A page's stream: the filtered history, then live messages, each
/// second's outcomes, a count of what it missed when it fell behind, and
/// a comment now and then so that proxies keep the connection open.
pub fn stream(
    live: &Live,
    filter: Filter,
) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    let (history, records, ticks) = live.subscribe();
    let start: Vec<Bytes> = history
        .iter()
        .filter(|item| filter.admits(item))
        .map(|item| item.frame.clone())
        .chain(std::iter::once(frame("dropped", r#"{"dropped":0}"#)))
        .collect();
    let state = (records, ticks, filter);
    let live = futures::stream::unfold(state, |(mut records, mut ticks, filter)| async move {
        loop {
            let next = tokio::select! {
                record = records.recv() => match record {
                    Ok(item) if filter.admits(&item) => item.frame.clone(),
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        frame("dropped", &json!({ "dropped": missed }).to_string())
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                tick = ticks.recv() => match tick {
                    Ok(frame) => frame,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = tokio::time::sleep(Duration::from_secs(15)) => Bytes::from_static(b": still here\n\n"),
            };
            return Some((Ok(next), (records, ticks, filter)));
        }
    });
    futures::StreamExt::chain(futures::stream::iter(start.into_iter().map(Ok)), live)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use shared_events::{Envelope, SeatReleased};

    fn item(topic: &str, key: &str) -> Item {
        let envelope = Envelope::new(SeatReleased {
            reservation_id: uuid::Uuid::nil(),
            schedule_id: uuid::Uuid::nil(),
            seat_no: 1,
        });
        Item::of(&Record {
            topic: topic.into(),
            partition: 0,
            offset: 0,
            timestamp: None,
            key: Some(key.into()),
            headers: Vec::new(),
            payload: Vec::new(),
            body: crate::inspect::Body::Event(Box::new(envelope)),
        })
    }

    fn live(keep: usize) -> Live {
        Live {
            shared: Mutex::new(Shared {
                history: VecDeque::new(),
                outcomes: BTreeMap::new(),
            }),
            sender: broadcast::channel(4).0,
            ticks: broadcast::channel(4).0,
            keep,
        }
    }

    #[test]
    fn a_filter_matches_topic_type_and_key_and_empty_matches_all() {
        let seat = item("concert.events", "k1");
        let by = |topic: &str, event_type: &str, key: &str| Filter {
            topic: Some(topic.into()),
            event_type: Some(event_type.into()),
            key: Some(key.into()),
        };
        assert!(Filter::default().admits(&seat));
        assert!(by("", "", "").admits(&seat));
        assert!(by("concert.events", "seatreleased", "k1").admits(&seat));
        assert!(!by("payment.events", "", "").admits(&seat));
        assert!(!by("", "SeatSold", "").admits(&seat));
        assert!(!by("", "", "k2").admits(&seat));
    }

    #[tokio::test]
    async fn a_page_gets_the_history_then_live_messages_and_is_told_what_it_missed() {
        let live = live(2);
        for key in ["old", "kept-1", "kept-2"] {
            live.publish(item("concert.events", key), None);
        }
        let mut page = Box::pin(stream(&live, Filter::default()));
        let text = |bytes: Bytes| String::from_utf8(bytes.to_vec()).unwrap();
        let first = text(page.next().await.unwrap().unwrap());
        assert!(first.contains("kept-1"), "the oldest is forgotten: {first}");
        assert!(text(page.next().await.unwrap().unwrap()).contains("kept-2"));
        assert!(text(page.next().await.unwrap().unwrap()).contains(r#""dropped":0"#));
        // The channel holds 4: six more while the page reads nothing.
        for n in 0..6 {
            live.publish(item("concert.events", &format!("new-{n}")), None);
        }
        let missed = text(page.next().await.unwrap().unwrap());
        assert_eq!(missed, "event: dropped\ndata: {\"dropped\":2}\n\n");
        assert!(text(page.next().await.unwrap().unwrap()).contains("new-2"));
    }
}
