-- Each service owns its database; none reads another's tables.
CREATE DATABASE ticketing_concert;
CREATE DATABASE ticketing_queue;
CREATE DATABASE ticketing_reservation;
CREATE DATABASE ticketing_member_balance;
CREATE DATABASE ticketing_payment;
