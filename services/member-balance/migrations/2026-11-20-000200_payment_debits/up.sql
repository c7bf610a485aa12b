-- One debit per payment, and at most one refund of it.
CREATE TABLE payment_debits (
    payment_id TEXT PRIMARY KEY,
    reservation_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    debit_entry_id TEXT NOT NULL,
    refund_entry_id TEXT
);
