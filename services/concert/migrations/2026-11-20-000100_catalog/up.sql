CREATE TABLE concerts (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    venue TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE schedules (
    id TEXT PRIMARY KEY,
    concert_id TEXT NOT NULL REFERENCES concerts (id),
    starts_at TIMESTAMP NOT NULL
);
CREATE INDEX schedules_by_concert ON schedules (concert_id, starts_at);

-- A seat is held or sold for at most one reservation: every change is a
-- conditional update on (schedule_id, seat_no).
CREATE TABLE seats (
    schedule_id TEXT NOT NULL REFERENCES schedules (id),
    seat_no INTEGER NOT NULL,
    grade TEXT NOT NULL,
    price BIGINT NOT NULL CHECK (price > 0),
    status TEXT NOT NULL CHECK (status IN ('AVAILABLE', 'HELD', 'SOLD')),
    reservation_id TEXT,
    payment_id TEXT,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (schedule_id, seat_no)
);
CREATE INDEX seats_by_reservation ON seats (reservation_id);
