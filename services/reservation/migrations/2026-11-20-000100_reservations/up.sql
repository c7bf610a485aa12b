-- PENDING -> HELD -> CONFIRMED, or REJECTED, EXPIRED, CANCELLED.
CREATE TABLE reservations (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    concert_id TEXT NOT NULL,
    schedule_id TEXT NOT NULL,
    seat_no INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('PENDING', 'HELD', 'CONFIRMED', 'REJECTED', 'EXPIRED', 'CANCELLED')),
    price BIGINT,
    hold_expires_at TIMESTAMP,
    payment_id TEXT,
    reason TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX reservations_by_user ON reservations (user_id, created_at);
CREATE INDEX reservations_hold_expiry ON reservations (hold_expires_at) WHERE status = 'HELD';
CREATE INDEX reservations_pending ON reservations (created_at) WHERE status = 'PENDING';

-- Which concert each schedule belongs to (from ConcertScheduled), so a pass
-- for one concert cannot reserve another's seats.
CREATE TABLE schedule_catalog (
    schedule_id TEXT PRIMARY KEY,
    concert_id TEXT NOT NULL
);

