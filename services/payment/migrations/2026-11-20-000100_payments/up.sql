-- PENDING -> COMPLETED, or FAILED with a reason.
CREATE TABLE payments (
    id TEXT PRIMARY KEY,
    reservation_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    status TEXT NOT NULL CHECK (status IN ('PENDING', 'COMPLETED', 'FAILED')),
    reason TEXT,
    refunded BOOLEAN NOT NULL,
    idempotency_key TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX payments_idempotency ON payments (user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- At most one payment in flight or completed per reservation.
CREATE UNIQUE INDEX payments_one_live_per_reservation ON payments (reservation_id)
    WHERE status IN ('PENDING', 'COMPLETED');
CREATE INDEX payments_pending ON payments (created_at) WHERE status = 'PENDING';

-- The saga events seen for each payment, with times.
CREATE TABLE payment_steps (
    payment_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    detail TEXT,
    at TIMESTAMP NOT NULL,
    PRIMARY KEY (payment_id, event_id)
);

-- Payment's own view of reservations, built from reservation events.
CREATE TABLE reservation_projection (
    reservation_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    concert_id TEXT NOT NULL,
    schedule_id TEXT NOT NULL,
    seat_no INTEGER NOT NULL,
    price BIGINT NOT NULL,
    status TEXT NOT NULL,
    hold_expires_at TIMESTAMP NOT NULL
);


-- Completed payments waiting to reach the data platform (retried with backoff).
CREATE TABLE data_platform_deliveries (
    payment_id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at TIMESTAMP NOT NULL,
    delivered_at TIMESTAMP,
    last_error TEXT
);
CREATE INDEX data_platform_due ON data_platform_deliveries (next_attempt_at) WHERE delivered_at IS NULL;
