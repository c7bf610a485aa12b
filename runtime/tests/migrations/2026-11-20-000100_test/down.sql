DROP TABLE effects; DROP TABLE charges;
