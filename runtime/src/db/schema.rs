//! The runtime's own tables, present in every service's database.

diesel::table! {
    outbox (seq) {
        seq -> BigInt,
        event_id -> Text,
        topic -> Text,
        partition_key -> Text,
        event_type -> Text,
        payload -> Text,
        traceparent -> Nullable<Text>,
        created_at -> Timestamp,
        sent_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    processed_events (consumer, event_id) {
        consumer -> Text,
        event_id -> Text,
        processed_at -> Timestamp,
    }
}

diesel::table! {
    outbox_relay_lease (name) {
        name -> Text,
        holder -> Nullable<Text>,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    ended_passes (token) {
        token -> Text,
        ended_at -> Timestamp,
    }
}
