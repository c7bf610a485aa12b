DROP TABLE known_concerts; DROP TABLE queue_dropouts; DROP TABLE queue_tokens; DROP TABLE queue_lines;
