-- Service A's state change and service B's effect, for the messaging tests.
CREATE TABLE charges (id TEXT PRIMARY KEY, amount BIGINT NOT NULL);
CREATE TABLE effects (
    event_id TEXT PRIMARY KEY,
    amount BIGINT NOT NULL,
    position BIGINT NOT NULL,
    trace_id TEXT
);
