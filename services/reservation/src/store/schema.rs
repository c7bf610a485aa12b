diesel::table! {
    reservations (id) {
        id -> Text,
        user_id -> Text,
        concert_id -> Text,
        schedule_id -> Text,
        seat_no -> Integer,
        status -> Text,
        price -> Nullable<BigInt>,
        hold_expires_at -> Nullable<Timestamp>,
        payment_id -> Nullable<Text>,
        reason -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        pass_token -> Nullable<Text>,
    }
}

diesel::table! {
    schedule_catalog (schedule_id) {
        schedule_id -> Text,
        concert_id -> Text,
    }
}

diesel::table! {
    failed_payments (payment_id) {
        payment_id -> Text,
    }
}
