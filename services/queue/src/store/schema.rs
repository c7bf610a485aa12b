diesel::table! {
    queue_lines (concert_id) {
        concert_id -> Text,
        next_seq -> BigInt,
        head_seq -> BigInt,
        active_count -> BigInt,
        rate_clock -> Timestamp,
        version -> BigInt,
    }
}

diesel::table! {
    queue_tokens (token) {
        token -> Text,
        user_id -> Text,
        concert_id -> Text,
        seq -> BigInt,
        status -> Text,
        pass -> Nullable<Text>,
        pass_expires_at -> Nullable<Timestamp>,
        ended_reason -> Nullable<Text>,
        last_seen_at -> Timestamp,
        created_at -> Timestamp,
        admitted_at -> Nullable<Timestamp>,
        version -> BigInt,
    }
}

diesel::table! {
    queue_dropouts (concert_id, node) {
        concert_id -> Text,
        node -> BigInt,
        dropped -> BigInt,
    }
}

diesel::table! {
    known_concerts (concert_id) {
        concert_id -> Text,
    }
}
