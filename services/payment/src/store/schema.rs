diesel::table! {
    payments (id) {
        id -> Text,
        reservation_id -> Text,
        user_id -> Text,
        amount -> BigInt,
        status -> Text,
        reason -> Nullable<Text>,
        refunded -> Bool,
        idempotency_key -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    payment_steps (payment_id, event_id) {
        payment_id -> Text,
        event_id -> Text,
        event_type -> Text,
        detail -> Nullable<Text>,
        at -> Timestamp,
    }
}

diesel::table! {
    reservation_projection (reservation_id) {
        reservation_id -> Text,
        user_id -> Text,
        concert_id -> Text,
        schedule_id -> Text,
        seat_no -> Integer,
        price -> BigInt,
        status -> Text,
        hold_expires_at -> Timestamp,
    }
}

diesel::table! {
    data_platform_deliveries (payment_id) {
        payment_id -> Text,
        body -> Text,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        delivered_at -> Nullable<Timestamp>,
        last_error -> Nullable<Text>,
    }
}
