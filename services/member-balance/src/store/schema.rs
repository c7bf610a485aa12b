diesel::table! {
    wallets (user_id) {
        user_id -> Text,
        balance -> BigInt,
        entry_count -> BigInt,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    ledger_entries (id) {
        id -> Text,
        user_id -> Text,
        entry_no -> BigInt,
        kind -> Text,
        amount -> BigInt,
        balance_after -> BigInt,
        reference -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    charge_requests (user_id, idempotency_key) {
        user_id -> Text,
        idempotency_key -> Text,
        amount -> BigInt,
        entry_id -> Text,
        balance_after -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    payment_debits (payment_id) {
        payment_id -> Text,
        reservation_id -> Text,
        user_id -> Text,
        amount -> BigInt,
        debit_entry_id -> Text,
        refund_entry_id -> Nullable<Text>,
    }
}
