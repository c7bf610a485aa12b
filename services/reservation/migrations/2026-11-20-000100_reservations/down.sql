DROP TABLE schedule_catalog; DROP TABLE reservations;
