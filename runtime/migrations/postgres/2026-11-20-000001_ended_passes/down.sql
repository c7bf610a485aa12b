DROP TABLE ended_passes;
