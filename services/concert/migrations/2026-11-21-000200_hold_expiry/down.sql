DROP TABLE catalog_seeds;
DROP INDEX seats_held_until;
ALTER TABLE seats DROP COLUMN hold_expires_at;
