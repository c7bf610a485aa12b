diesel::table! {
    concerts (id) {
        id -> Text,
        title -> Text,
        venue -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    schedules (id) {
        id -> Text,
        concert_id -> Text,
        starts_at -> Timestamp,
    }
}

diesel::table! {
    seats (schedule_id, seat_no) {
        schedule_id -> Text,
        seat_no -> Integer,
        grade -> Text,
        price -> BigInt,
        status -> Text,
        reservation_id -> Nullable<Text>,
        payment_id -> Nullable<Text>,
        updated_at -> Timestamp,
        hold_expires_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    catalog_seeds (name) {
        name -> Text,
        seeded_at -> Timestamp,
    }
}

diesel::joinable!(schedules -> concerts (concert_id));
diesel::allow_tables_to_appear_in_same_query!(concerts, schedules, seats, catalog_seeds);
