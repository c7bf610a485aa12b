-- Passes that ended before their expiry (QueuePassEnded), for services that
-- accept passes: a verified signature is not enough once this says so.
CREATE TABLE ended_passes (
    token TEXT PRIMARY KEY,
    ended_at TIMESTAMP NOT NULL
);
