-- One waiting line per concert. Fans get consecutive arrival numbers (seq);
-- every fan before head_seq is no longer waiting (admitted or dropped).
CREATE TABLE queue_lines (
    concert_id TEXT PRIMARY KEY,
    next_seq BIGINT NOT NULL,
    head_seq BIGINT NOT NULL,
    active_count BIGINT NOT NULL CHECK (active_count >= 0),
    -- Admission-rate clock: admitting n fans moves it n/rate seconds on.
    rate_clock TIMESTAMP NOT NULL
);

CREATE TABLE queue_tokens (
    token TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    concert_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('WAITING', 'ACTIVE', 'EXPIRED')),
    pass TEXT,
    pass_expires_at TIMESTAMP,
    ended_reason TEXT,
    last_seen_at TIMESTAMP NOT NULL,
    created_at TIMESTAMP NOT NULL,
    admitted_at TIMESTAMP
);
-- A fan has at most one live token per concert.
CREATE UNIQUE INDEX queue_tokens_live ON queue_tokens (user_id, concert_id)
    WHERE status IN ('WAITING', 'ACTIVE');
CREATE UNIQUE INDEX queue_tokens_arrival ON queue_tokens (concert_id, seq);
CREATE INDEX queue_tokens_waiting ON queue_tokens (concert_id, seq) WHERE status = 'WAITING';
CREATE INDEX queue_tokens_idle ON queue_tokens (last_seen_at) WHERE status = 'WAITING';
CREATE INDEX queue_tokens_pass_expiry ON queue_tokens (pass_expires_at) WHERE status = 'ACTIVE';

-- A Fenwick tree over arrival numbers counting fans who dropped out while
-- waiting: "how many dropped before seq N" reads at most 64 rows, however
-- long the line, so a position lookup never scans the line.
CREATE TABLE queue_dropouts (
    concert_id TEXT NOT NULL,
    node BIGINT NOT NULL,
    dropped BIGINT NOT NULL,
    PRIMARY KEY (concert_id, node)
);

-- Concerts the catalog announced (ConcertScheduled): fans may only queue for these.
CREATE TABLE known_concerts (
    concert_id TEXT PRIMARY KEY
);
