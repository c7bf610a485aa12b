DROP TABLE ended_passes; DROP TABLE schedule_catalog; DROP TABLE reservations;
