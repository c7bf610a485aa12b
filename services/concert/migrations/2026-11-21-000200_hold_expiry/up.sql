-- The concert service decides how long a seat stays HELD and releases it on
-- its own data once that time (plus a grace for a payment in flight) has
-- passed, whatever happened to the reservation's events.
ALTER TABLE seats ADD COLUMN hold_expires_at TIMESTAMP;
CREATE INDEX seats_held_until ON seats (hold_expires_at) WHERE status = 'HELD';

-- Seeds run once per catalog: the first instance to insert the row seeds.
CREATE TABLE catalog_seeds (
    name TEXT PRIMARY KEY,
    seeded_at TIMESTAMP NOT NULL
);
